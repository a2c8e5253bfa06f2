"""Bench scripts at their smallest size: the script runs end to end and its table says what it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(python: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([python, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_bench_openai_quick_loses_and_doubles_nothing():
    done = _bench(sys.executable, "bench/bench_openai.py", "--quick")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [ln.split("|")[1:-1] for ln in done.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == 4  # two concurrencies, adaptive and fixed
    assert all(r[-2].strip() == "0" and r[-1].strip() == "0" for r in rows)  # lost, duplicated


def test_bench_vllm_dry_run_plans_every_mode():
    done = _bench(sys.executable, "bench/bench_vllm.py", "--dry-run", "--prompts", "4", "--new-tokens", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bench_vllm dry run: 4 prompts" in done.stdout and "modes litho,llm,raydata" in done.stdout


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(900)  # as long as its subprocess may take: three vLLM CPU engine starts
def test_bench_vllm_smallest_size_runs_every_mode():
    """Over 30 s: three eager engine starts on the CPU (litho's pipeline, LLM.generate, Ray Data LLM's
    processor), 2 prompts; compiled engines took 304 s for the first two alone."""
    pytest.importorskip("vllm")
    done = _bench(sys.executable, "bench/bench_vllm.py", "--prompts", "2", "--new-tokens", "8",
                  "--enforce-eager", timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "engines eager (no torch.compile)" in done.stdout
    rows = [ln.split("|")[1:-1] for ln in done.stdout.splitlines() if ln.startswith("| ")]
    # The header, then a row a mode (the "|---|" line does not start with "| ").
    assert [r[0].strip() for r in rows] == ["mode", "litho", "llm", "raydata"]
    assert all(int(r[1]) > 0 for r in rows[1:]), rows  # every mode generated tokens
