"""A two-node Ray cluster on this machine: `make submit` runs the job there, the teacher actors go to the
worker node through a custom resource, and the shards equal a local run's."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.conftest import compose
from tests.pipeline.test_submit import _free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CONFIG = ["teacher=dummy", "n=60", "filters.lm=null", "dedup=minhash", "teacher.duplicate_rate=0.1",
          "output.rows_per_shard=20", "output.validation_fraction=0.2"]  # fmt: skip


def _node(ray_bin: str, env: dict, *args: str) -> subprocess.Popen:
    ports = ["--dashboard-agent-listen-port", str(_free_port()), "--node-manager-port", str(_free_port()),
             "--object-manager-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
             "--runtime-env-agent-port", str(_free_port())]  # fmt: skip
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(300 << 20),
         "--disable-usage-stats", *ports, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _wait_for_port(port: int, seconds: float) -> None:
    """Until something listens on 127.0.0.1:``port``, at most ``seconds`` (then the test fails)."""
    import socket

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
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def two_nodes():
    """A head (2 CPUs, no teacher resource) and a worker node (2 CPUs, ``teacher_node``), token-authenticated."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    gcs, dashboard = _free_port(), _free_port()
    head = _node(ray_bin, env, "--head", "--port", str(gcs), "--num-cpus", "2", "--include-dashboard=true",
                 "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                 "--ray-client-server-port", str(_free_port()))  # fmt: skip
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
            )
        )
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for node in reversed(nodes):
            _stop(node)


def _digests(out: Path) -> dict[str, str]:
    files = sorted([*out.glob("data/*.parquet"), *out.glob("rejected/*.parquet")])
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _state(address: str, env: dict, kind: str) -> list[dict]:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    out = subprocess.run([ray_bin, "list", kind, "--address", address, "--detail", "--format", "json", "--limit", "1000"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout)


def _teacher_nodes(address: str, env: dict) -> tuple[set[str], str]:
    """Node ids of the teacher actors that ran, and the worker node's id (the one with ``teacher_node``)."""
    nodes = _state(address, env, "nodes")
    worker = next(n["node_id"] for n in nodes if "teacher_node" in n.get("resources_total", {}))
    actors = _state(address, env, "actors")
    teachers = [
        a for a in actors if "GenerateStage" in f"{a.get('repr_name')}{a.get('class_name')}{a.get('name')}"
    ]
    assert teachers, [a.get("class_name") for a in actors]
    # An actor Ray Data asked for but never placed (the pool scaled down first) has no node.
    return {a["node_id"] for a in teachers if a.get("node_id")}, worker


def test_submit_to_two_nodes_places_teachers_on_the_worker_and_matches_a_local_run(
    two_nodes, ray_session, tmp_path
):
    """Over 30 s: a Ray cluster of two nodes of its own and a job submitted to it; placement across nodes
    is what it tests, which the tests' shared Ray session cannot show. The local run to compare with runs
    here, on that session."""
    address, env = two_nodes
    shared = tmp_path / "cluster"  # both nodes see this machine's disk: the shared storage
    args = " ".join([*CONFIG, f"output.dir={shared}", "cluster.teacher_resources={teacher_node:1}"])
    deadline = time.monotonic() + 240
    while True:  # the job agent registers a few seconds after the dashboard answers
        result = subprocess.run(["make", "-s", "submit", f"RAY_ADDRESS={address}", f"ARGS={args}"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        transient = any(s in result.stderr for s in ("No available agent", "Failed to connect to Ray"))
        if result.returncode == 0 or not transient or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    teachers, worker = _teacher_nodes(address, env)
    assert teachers == {worker}, f"teacher actors ran on {teachers}, the worker node is {worker}"

    from pipeline.run import run

    local = tmp_path / "local"
    run(compose(*CONFIG, f"output.dir={local}"))
    remote, here = _digests(shared), _digests(local)
    assert len(remote) > 3 and remote == here
