"""`make submit` sends the job to a running Ray cluster (here: a local `ray start --head`)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A token-authenticated single-node cluster on loopback, torn down with its process group."""
    # A cluster's nodes run the job entrypoint (`python -m pipeline.cli generate`) with their own Python, which
    # must have litho's dependencies: here, the project's venv first on PATH, as on a node where it is
    # installed. (CI runs make without activating the venv, so `python` alone would be the system one.)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    gcs, dashboard = _free_port(), _free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--num-cpus",
            "2",
            "--include-dashboard=true",
            # Fixed defaults (the agent's 52365, the client server's 10001) clash with any other Ray on
            # this machine, such as the test session's own: then no job agent ever registers.
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--ray-client-server-port",
            str(_free_port()),
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a graceful stop takes ~30 s; the test's cluster needs none
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_make_submit_runs_the_job_on_the_cluster(ray_head, tmp_path):
    """Over 30 s: a Ray head of its own and a job through `make submit` (Ray's job API is what it tests)."""
    address, env = ray_head
    out = tmp_path / "run"
    command = ["make", "-s", "submit", f"RAY_ADDRESS={address}", f"ARGS=teacher=dummy n=6 output.dir={out}"]
    deadline = time.monotonic() + 240
    while True:  # the job agent registers a few seconds after the dashboard answers
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        transient = "No available agent" in result.stderr or "Failed to connect to Ray" in result.stderr
        if result.returncode == 0 or not transient or time.monotonic() > deadline:
            break
        time.sleep(5)
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
