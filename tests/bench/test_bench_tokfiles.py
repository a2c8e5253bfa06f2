"""bench/bench_tokfiles.py at its smallest size: it runs end to end and prints its table (no timing is
asserted: speed targets live in the benchmark's output, bench/results/tokfiles.md). ~40 s: one litho run
in a fresh process (its own Ray) and datatrove's two writers on its 100 rows. A bench test: `make test-bench`
runs it beside tests/bench/test_bench_quick.py (`make test` leaves both out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.bench
@pytest.mark.slow
def test_bench_tokfiles_runs_at_its_smallest_size():
    """Over 30 s on one core: the bench script in a process of its own, which runs litho's token-file phase
    and datatrove's tokenizer on the same 100 documents (a bench must run at its smallest size)."""
    result = subprocess.run([sys.executable, "bench/bench_tokfiles.py", "--sizes", "100"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 100 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # kept rows, the phase's seconds, datatrove's; the ratios need both times measured (not rounded to 0)
    assert cells[1] == "100" and float(cells[3]) > 0 and float(cells[8]) > 0, row
    assert "load average at end" in result.stdout and "CPUs" in result.stdout
