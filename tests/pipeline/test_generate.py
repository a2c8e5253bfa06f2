"""The teacher stage outside Ray: a progress line per batch with the tokens it really produced."""

from __future__ import annotations

import re

import numpy as np

from generators.prompts.textbook import TextbookGenerator
from pipeline.generate import GenerateStage


def _batches(n: int, split: int) -> list[dict]:
    plan = TextbookGenerator().plan(n, seed=0)
    parts = (plan[:split], plan[split:])
    return [{k: np.asarray([r[k] for r in part], dtype=object) for k in part[0]} for part in parts]


def test_each_batch_reports_rows_and_tokens(capsys):
    stage = GenerateStage({"_target_": "generators.teachers.dummy.DummyTeacher"})
    outs = [stage(batch) for batch in _batches(8, 5)]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("teacher:")]
    assert len(lines) == 2
    reported = [re.match(r"teacher: (\d+) rows, (\d+) tokens in ", ln).groups() for ln in lines]
    assert reported == [(str(len(o["id"])), str(int(np.sum(o["completion_tokens"])))) for o in outs]
    total = int(sum(np.sum(o["completion_tokens"]) for o in outs))
    assert lines[-1].endswith(f"this actor so far: 8 rows, {total} tokens")
