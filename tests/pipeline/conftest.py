from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on every interface, below the kernel's ephemeral range and above Ray's worker ports.

    A port the kernel hands out (``bind(0)``) comes from the ephemeral range, where any outgoing
    connection may take it before the server it was meant for binds it: a two-node cluster's worker lost
    its dashboard agent that way (``Address already in use`` on its metrics port), and with it the node.
    Ports below that range are never given to outgoing connections."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(20000, max(low, 20001)))  # Ray's workers take 10002-19999
    random.shuffle(candidates)
    for port in candidates:
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _node(ray_bin: str, env: dict, *args: str) -> subprocess.Popen:
    ports = ["--dashboard-agent-listen-port", str(free_port()), "--node-manager-port", str(free_port()),
             "--object-manager-port", str(free_port()), "--metrics-export-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port())]  # fmt: skip
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(300 << 20),
         "--disable-usage-stats", *ports, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _wait_for_port(port: int, seconds: float) -> None:
    """Until something listens on 127.0.0.1:``port``, at most ``seconds`` (then the test fails)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} after {seconds} s") from None
            time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """Kill a node's process group at once: a graceful `ray stop` takes ~30 s, and a test cluster needs none."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def pytest_collection_modifyitems(items: list) -> None:
    """The tests on the two-node cluster run last, one after another: the session's cluster starts once
    and is stopped at once after them, instead of idling (two raylets, a dashboard) between modules."""
    on_cluster = [item for item in items if "two_nodes" in getattr(item, "fixturenames", ())]
    items[:] = [item for item in items if item not in on_cluster] + on_cluster


@pytest.fixture(scope="session")
def two_nodes():
    """A token-authenticated Ray cluster of two nodes on loopback, started with `ray start` as a user
    would: a head (2 CPUs, no teacher resource) and a worker node (2 CPUs, ``teacher_node``). One for the
    session: `make submit` (test_submit.py) and placement across nodes (test_multinode.py) both use it.
    Yields the job API's address and the environment to reach it with."""
    # A cluster's nodes run the job entrypoint (`python -m pipeline.cli generate`) with their own Python, which
    # must have litho's dependencies: here, the project's venv first on PATH, as on a node where it is
    # installed. (CI runs make without activating the venv, so `python` alone would be the system one.)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    gcs, dashboard = free_port(), free_port()
    # Fixed default ports (the agent's 52365, the client server's 10001) clash with any other Ray on this
    # machine, such as the test session's own: then no job agent ever registers. Every port is a free one.
    head = _node(ray_bin, env, "--head", "--port", str(gcs), "--num-cpus", "2", "--include-dashboard=true",
                 "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                 "--ray-client-server-port", str(free_port()))  # fmt: skip
    nodes = [head]
    try:
        _wait_for_port(gcs, 120)  # the head's GCS accepts connections: a bounded wait, not a fixed sleep
        _wait_for_port(dashboard, 120)  # and its job API (a submit before it listens was refused once)
        nodes.append(
            _node(
                ray_bin,
                env,
                "--address",
                f"127.0.0.1:{gcs}",
                "--num-cpus",
                "2",
                "--resources",
                '{"teacher_node": 4}',
            )  # fmt: skip
        )
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for node in reversed(nodes):
            _stop(node)


def make_submit(address: str, env: dict, args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`make submit` of ``args`` to the cluster at ``address``, retried while its job agent has not yet
    registered (a few seconds after the dashboard answers; at most 240 s)."""
    root = Path(__file__).resolve().parents[2]
    deadline = time.monotonic() + 240
    while True:
        result = subprocess.run(["make", "-s", "submit", f"RAY_ADDRESS={address}", f"ARGS={args}"], cwd=root,
                                env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip
        transient = any(s in result.stderr for s in ("No available agent", "Failed to connect to Ray"))
        if result.returncode == 0 or not transient or time.monotonic() > deadline:
            return result
        time.sleep(5)
