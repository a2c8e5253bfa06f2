"""The default pipeline with the real embedded teacher, inside a network namespace with no network."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# What a default run printed before issue #15: none of it may come back.
NOISE = (
    "Token authentication is enabled",  # Ray's notice at every local start
    "core_worker.cc",  # the native error line about actor constructor arguments
    "Loading weights",  # transformers' bar from inside a worker
    "dequantiz",  # the GGUF dequantization bar
    "PYTHON worker processes",  # raylet: more workers than expected
    "UserWarning",  # Ray Data's concurrency warning (as Ray < 2.51 printed it)
    "is deprecated",  # the same warning from Ray >= 2.51, and any other deprecation
    "Failed to convert column",  # pyarrow falling back to pickled objects
    "pid=",  # any worker line forwarded to the driver
)

# Any line of Ray's Python logging ("2026-12-07 12:47:50,735\tWARNING util.py:650 -- ...").
RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _offline_prefix() -> list[str]:
    """`unshare -n` with loopback up (Ray needs it); empty where namespaces are not permitted."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return [] if probe.returncode else ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


def test_embedded_teacher_end_to_end_without_network(tmp_path):
    """Over 30 s: the real embedded teacher in a `litho generate` process of its own inside a network
    namespace: that the default run needs no network and prints no noise is what it tests."""
    prefix = _offline_prefix()
    if not prefix:
        pytest.skip("network namespaces are not permitted here: cannot prove the run is offline")
    out = tmp_path / "run"
    litho = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "generate",
        "n=4",
        "teacher.sampling.max_new_tokens=64",
        "teacher.batch_size=4",
        "cluster.teacher_batch_size=4",
        "filters.min_words=5",
        f"output.dir={out}",
    ]
    result = subprocess.run(prefix + litho, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, shlex.join(litho) + "\n" + result.stdout[-3000:] + result.stderr[-3000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["planned"] == 4 == manifest["counts"]["generated"]
    kept = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    dropped = [r for f in sorted((out / "rejected").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(kept) == manifest["counts"]["kept"] and len(kept) + len(dropped) == 4
    assert kept, f"every real text was dropped: {manifest['dropped_by_reason']}"
    for row in kept:
        words = row["text"].split()
        assert row["teacher"] == "embedded:smollm2" and row["completion_tokens"] > 0
        assert len(words) >= 5 and sum(w.isalpha() for w in words) / len(words) > 0.5  # real prose
        assert 0 < row["n_tokens"] <= row["completion_tokens"] + 2
    assert len({r["id"] for r in kept}) == len(kept)
    assert "Summary" not in result.stderr
    assert f"shards: {out}/data" in result.stdout and f"report: {out}/report.html" in result.stdout
    # A quiet terminal (issue #15): the run's own lines stay, Ray's and the workers' noise does not.
    terminal = result.stdout + result.stderr
    assert "teacher: 4/4 rows (100%)" in result.stderr
    noisy = [ln for ln in terminal.splitlines() if any(n in ln for n in NOISE) or RAY_LOG_LINE.match(ln)]
    assert not noisy, noisy

    from datasets import load_dataset

    assert len(load_dataset("parquet", data_dir=str(out / "data"), split="train")) == len(kept)
