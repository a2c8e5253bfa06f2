"""Starting or joining Ray, with the run kept offline unless the user opts in."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from generators.errors import ConfigError

log = logging.getLogger(__name__)

# Hub look-ups and usage reports off: a run must never reach the network by accident.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def offline_env(allow_network: bool) -> dict[str, str]:
    return {} if allow_network else dict(OFFLINE_ENV)


# Ray Data warnings that every litho run triggers and that mean nothing for it: the teacher and
# scorer actor pools hold the CPUs by design (ray.data "does not have any available CPUs ... will
# hang"), and progress bars are off unless cluster.progress_bars=true.
BENIGN_RAY_DATA = ("does not have any available CPUs", "Progress bars disabled")


def _quiet_ray_data(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in BENIGN_RAY_DATA)


@contextlib.contextmanager
def connect(cluster: dict, allow_network: bool = False) -> Iterator[None]:
    """Start a local Ray instance (``mode: local``) or join one (``mode: remote``) for the run."""
    import ray
    from ray.data import DataContext

    env = offline_env(allow_network)
    os.environ.update(env)
    if ray.is_initialized():  # a caller (a test, a notebook) already connected: use it as is
        owned = False
    elif cluster["mode"] == "local":
        ray.init(
            address="local",  # always a fresh instance, never a `ray start` cluster found on this machine
            num_cpus=cluster.get("num_cpus") or os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=cluster.get("log_to_driver", True),
            runtime_env={"env_vars": env},
        )
        owned = True
    elif cluster["mode"] == "remote":
        address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ConfigError("cluster=remote: set RAY_ADDRESS (or cluster.address) to the cluster's address")
        # A job submitted with `ray job submit` brings its own runtime env (see `make submit`).
        ray.init(address=address, logging_level=logging.WARNING)
        owned = True
    else:
        raise ConfigError(f"cluster.mode={cluster['mode']}: use local or remote")
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(cluster.get("progress_bars", False))
    # Ray's default of 200 hash partitions costs seconds per groupby on a laptop-sized run.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ctx.default_hash_shuffle_parallelism = int(cluster.get("shuffle_partitions") or max(2, 2 * cpus))
    if not cluster.get("verbose", False):
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Records of ray.data's child loggers reach only handlers' filters, not the parent logger's.
        for name in ("ray.data", "ray", ""):
            for handler in logging.getLogger(name).handlers:
                if _quiet_ray_data not in handler.filters:
                    handler.addFilter(_quiet_ray_data)
    try:
        yield
    finally:
        if owned:
            ray.shutdown()
