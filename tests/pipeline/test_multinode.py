"""A two-node Ray cluster on this machine: `make submit` runs the job there, the teacher actors go to the
worker node through a custom resource, and the shards equal a local run's."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import compose, make_submit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CONFIG = ["teacher=dummy", "n=60", "filters.lm=null", "dedup=minhash", "teacher.duplicate_rate=0.1",
          "output.rows_per_shard=20", "output.validation_fraction=0.2"]  # fmt: skip


def _digests(out: Path) -> dict[str, str]:
    files = sorted([*out.glob("data/*.parquet"), *out.glob("rejected/*.parquet")])
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _state(address: str, env: dict, kind: str) -> list[dict]:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    out = subprocess.run([ray_bin, "list", kind, "--address", address, "--detail", "--format", "json", "--limit", "1000"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout)


def _job_number(actor: dict) -> int:
    return int.from_bytes(bytes.fromhex(actor.get("job_id") or "00"), "little")


def _teacher_nodes(address: str, env: dict) -> tuple[set[str], str, list]:
    """Node ids of this test's teacher actors, the worker node's id (the one with ``teacher_node``), and
    each of those actors' state, node and cause of death (for the failure message)."""
    nodes = _state(address, env, "nodes")
    worker = next(n["node_id"] for n in nodes if "teacher_node" in n.get("resources_total", {}))
    actors = _state(address, env, "actors")
    teachers = [
        a for a in actors if "GenerateStage" in f"{a.get('repr_name')}{a.get('class_name')}{a.get('name')}"
    ]
    # The cluster is the session's: test_submit.py's job left teacher actors too (on either node).
    # This test's job is the newest one (Ray's job ids count up, as little-endian bytes).
    newest = max((_job_number(a) for a in teachers), default=None)
    teachers = [a for a in teachers if _job_number(a) == newest]
    assert teachers, [a.get("class_name") for a in actors]
    placed = [(a.get("state"), a.get("node_id"), a.get("death_cause")) for a in teachers]
    # An actor Ray Data asked for but never placed (the pool scaled down first) has no node.
    return {a["node_id"] for a in teachers if a.get("node_id")}, worker, placed


def test_submit_to_two_nodes_places_teachers_on_the_worker_and_matches_a_local_run(
    two_nodes, ray_session, tmp_path
):
    """Over 30 s: a job submitted to a Ray cluster of two nodes (the session's, shared with test_submit.py);
    placement across nodes is what it tests, which the tests' in-process Ray session cannot show. The local
    run to compare with runs here, on that session."""
    address, env = two_nodes
    shared = tmp_path / "cluster"  # both nodes see this machine's disk: the shared storage
    args = " ".join([*CONFIG, f"output.dir={shared}", "cluster.teacher_resources={teacher_node:1}"])
    result = make_submit(address, env, args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    teachers, worker, placed = _teacher_nodes(address, env)
    assert teachers == {worker}, f"teacher actors ran on {teachers}, the worker node is {worker}: {placed}"

    from pipeline.run import run

    local = tmp_path / "local"
    run(compose(*CONFIG, f"output.dir={local}"))
    remote, here = _digests(shared), _digests(local)
    assert len(remote) > 3 and remote == here
