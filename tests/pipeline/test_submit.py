"""`make submit` sends the job to a running Ray cluster (here: the session's two nodes started with
`ray start` on loopback, tests/pipeline/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pipeline.conftest import make_submit

pytestmark = pytest.mark.slow


def test_make_submit_runs_the_job_on_the_cluster(two_nodes, tmp_path):
    """Over 30 s: a job through `make submit` to a Ray cluster started with `ray start` (the session's
    two-node cluster, shared with test_multinode.py); Ray's job API is what it tests."""
    address, env = two_nodes
    out = tmp_path / "run"
    result = make_submit(address, env, f"teacher=dummy n=6 output.dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["planned"] == 6 == manifest["counts"]["rows_in"]
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["counts"]["kept"] > 0


def test_remote_mode_needs_an_absolute_output_dir(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "generate",
            "cluster=remote",
            "teacher=dummy",
            "output.dir=relative/run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "give an absolute path" in result.stderr
