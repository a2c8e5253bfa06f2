"""bench/bench_rules.py at its smallest size: both tables come out, and litho agrees with datatrove."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.bench_rules import agreement, speed
from bench.man_pages import real_rows, rendered_man_pages

pytest.importorskip("datatrove")
BEFORE = "a4f3573"  # main before issue 22: the repetition scores the issue found wrong


def test_agreement_and_speed_tables_at_the_smallest_size():
    known = (
        subprocess.run(["git", "cat-file", "-e", f"{BEFORE}^{{commit}}"], capture_output=True).returncode == 0
    )
    table = agreement(rendered_man_pages(40)[:10], BEFORE if known else None)
    cells = [
        [c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines() if ln.startswith("| ")
    ]
    rules = [c for c in cells if len(c) == 5 and "(" in c[0] and c[1] != "litho drops"]
    assert len(rules) == 23 and all(c[3] == "0" for c in rules), table  # no Gopher decision differs
    sets = [c for c in cells if len(c) == 4 and c[0] != "rule set"]
    assert [c[0] for c in sets] == ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    assert all(c[3] == "0" for c in sets), table
    if known:
        assert "Before: the repetition scores of a4f3573" in table
    timing = speed(real_rows(100), chunk=50, batch_size=25)
    assert "| datatrove |" in timing and "| litho |" in timing and "x CPU time" in timing


def test_kept_change_reproduces_the_old_rules_drops():
    """teacher_texts.json holds the 6 texts repetition_v1 dropped at a4f3573 (its ``made_by`` says so) and
    34 others: the old rules, run again, must drop exactly 6 of them."""
    if subprocess.run(["git", "cat-file", "-e", f"{BEFORE}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"{BEFORE} is not in this clone's history")
    from pathlib import Path

    from bench.bench_rules import kept_change, texts_of

    path = Path(__file__).parents[1] / "filters" / "rules" / "teacher_texts.json"
    row = kept_change(BEFORE, texts_of(path)).splitlines()[-1]
    cli = subprocess.run(  # the README's command, as written there
        [sys.executable, "bench/bench_rules.py", "--before", BEFORE, "--texts", str(path)],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert cli.stdout.splitlines()[-1] == row
    n, before, now, differ = (int(c) for c in row.strip("|").split("|"))
    assert (n, before) == (40, 6), row
    assert differ >= abs(before - now), row
