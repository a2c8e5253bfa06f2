"""Every bench script at its smallest size: ``python bench/bench_X.py --quick`` for each bench/bench_*.py.

The project standard: every bench script must run at its smallest size, and a test must run it (a script
nothing runs breaks silently when the code under it changes). ``--quick`` is that size (and what
``make bench ARGS=--quick`` passes to every script): the script runs end to end and prints its table,
writes nothing to bench/results and leaves no temporary folder behind. Each test runs one script in a
process of its own and checks exactly that.

These take minutes in all (a teacher or a Ray start in most scripts), so ``make test`` leaves them out
(``-m "not bench"``); run them with ``make test-bench`` (CI runs both).
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "bench").glob("bench_*.py"))
# The slowest first (about 165, 90, 90, 85 and 85 s under make test-bench's one-core workers), so that
# both workers finish at about the same time; then the rest by name.
SLOWEST = ("bench_structured", "bench_probe", "bench_generators", "bench_token_aware", "bench_faults")
ORDER = [s for name in SLOWEST for s in SCRIPTS if s.stem == name] + [
    s for s in SCRIPTS if s.stem not in SLOWEST
]
TIMEOUT_S = 600  # the script's own limit: the slowest took 165 s on one core
# Scripts that print no markdown table, and a line each always prints once it has run through.
PRINTS = {
    "bench_packing": "packing: ",
    "bench_probe_controls": "control ",
    "bench_teacher": "batch",
    "bench_vllm": "bench_vllm",
}

pytestmark = [pytest.mark.bench, pytest.mark.slow]


def _results_status() -> str:
    done = subprocess.run(["git", "status", "--porcelain", "bench/results"], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout


@pytest.mark.timeout(TIMEOUT_S + 60)
@pytest.mark.parametrize("script", ORDER, ids=[s.stem for s in ORDER])
def test_bench_script_runs_quick(script: Path, tmp_path: Path) -> None:
    """Over 30 s for most: the script loads the embedded teacher, a scorer or starts Ray (tens of
    seconds each on one core) at its smallest size."""
    scratch = tmp_path / "tmp"  # the script's temporary folders go here: it must remove them
    scratch.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "VLLM_NO_USAGE_STATS": "1",
        "TMPDIR": str(scratch),
        # Where they are without TMPDIR: Ray's sessions (its socket paths must stay short) and torch
        # inductor's kernel cache (the bf16 teacher's kernels; cold, a script takes seconds longer)
        "RAY_TMPDIR": os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(),
        "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        or str(Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"),
    }
    before = _results_status()
    proc = subprocess.Popen([sys.executable, str(script), "--quick"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and what it started (Ray, litho runs)
        out, err = proc.communicate()
        pytest.fail(f"{script.name} --quick ran past {TIMEOUT_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    tail = f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    assert proc.returncode == 0, f"{script.name} --quick exited {proc.returncode}\n{tail}"
    lines = out.splitlines()
    if script.stem in PRINTS:
        assert any(PRINTS[script.stem] in line for line in lines), tail
    else:
        assert any(line.startswith("| ") for line in lines), f"no table row in the output\n{tail}"
    assert _results_status() == before, f"{script.name} --quick changed bench/results\n{tail}"
    # torch inductor's precompiled headers stay in TMPDIR (a cache): anything else is a folder left behind
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    assert not left, f"{script.name} --quick left temporary folders behind: {left}\n{tail}"
