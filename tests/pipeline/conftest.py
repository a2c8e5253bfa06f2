from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (it takes ~8 s to start); litho's run() reuses it."""
    ray = pytest.importorskip("ray")
    from pipeline.cluster import LOCAL_SYSTEM_CONFIG

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}},
        _system_config=LOCAL_SYSTEM_CONFIG,  # as litho's own local instance (pipeline/cluster.py)
    )
    from ray.data import DataContext

    # As pipeline.cluster.connect sets it for a run: tests that call a groupby directly (the shuffled
    # dedup paths) would otherwise shuffle into Ray's default of 200 partitions on 2 CPUs.
    DataContext.get_current().default_hash_shuffle_parallelism = 4
    yield ray
    ray.shutdown()


def compose(*overrides: str, config_name: str = "config"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="conf", version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
