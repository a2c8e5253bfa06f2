"""The teacher stage outside Ray, and the driver's progress read from the checkpoints it writes."""

from __future__ import annotations

import io
import re
import sys
import time

import numpy as np

from generators.prompts.textbook import TextbookGenerator
from pipeline.checkpoint import read_block
from pipeline.generate import GenerateStage
from pipeline.progress import TeacherProgress, teacher_progress


def _batches(n: int, split: int) -> list[dict]:
    plan = TextbookGenerator().plan(n, seed=0)
    parts = (plan[:split], plan[split:])
    return [{k: np.asarray([r[k] for r in part], dtype=object) for k in part[0]} for part in parts]


class Pipe(io.StringIO):
    def isatty(self) -> bool:  # a job log or a pipe: plain lines, no bar
        return False


def test_progress_counts_the_rows_and_tokens_of_new_checkpoints(tmp_path):
    stage = GenerateStage(
        {"_target_": "generators.teachers.dummy.DummyTeacher"}, checkpoint_dir=str(tmp_path)
    )
    first, second = _batches(8, 5)
    earlier = stage(first)  # an earlier run's batch: not this run's progress
    progress = TeacherProgress(tmp_path, total=3, stream=Pipe())
    progress.poll()
    assert (progress.rows, progress.tokens) == (0, 0)
    out = stage(second)
    progress.poll()
    progress.poll()  # a file is counted once
    # With checkpoints the stage hands on only failed rows (none here); the texts are in the files.
    assert len(out["id"]) == len(earlier["id"]) == 0
    written = read_block(tmp_path, 0)  # rows without a plan block column are block 0
    mine = np.isin(written.column("id").to_numpy(zero_copy_only=False), second["id"])
    assert progress.rows == 3 == int(mine.sum())
    assert progress.tokens == int(np.sum(written.column("completion_tokens").to_numpy()[mine])) > 0
    line = progress.line()
    assert re.match(
        rf"teacher: 3/3 rows \(100%\), {progress.tokens:,} tokens, \d+ tok/s, elapsed 0:00:\d\d, ETA 0:00:00$",
        line,
    )


def test_plain_lines_while_running_and_a_final_one(tmp_path):
    stage = GenerateStage(
        {"_target_": "generators.teachers.dummy.DummyTeacher"}, checkpoint_dir=str(tmp_path)
    )
    pipe = Pipe()
    progress = TeacherProgress(tmp_path, total=8, interval=0.2, stream=pipe).start()
    time.sleep(1.5)
    for batch in _batches(8, 5):
        stage(batch)
    progress.stop()
    lines = pipe.getvalue().splitlines()
    assert len(lines) >= 2 and all(ln.startswith("teacher: ") for ln in lines)
    assert lines[0].startswith("teacher: 0/8 rows (0%)") and lines[0].endswith("ETA ?")
    assert lines[-1].startswith("teacher: 8/8 rows (100%)")


def test_disabled_or_nothing_to_do_prints_nothing(tmp_path, capsys):
    with teacher_progress(tmp_path, 0):
        pass
    with teacher_progress(tmp_path, 5, enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar(tmp_path, monkeypatch):
    from pipeline import cluster

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    progress = TeacherProgress(tmp_path, total=4, stream=term).start()
    progress.stop()
    assert "teacher: 100%" not in term.getvalue() and "0/4" in term.getvalue()  # tqdm's bar, not a line
    monkeypatch.setattr(cluster, "_stderr_was_terminal", True)  # stderr swapped for the noise filter
    assert cluster.is_terminal(sys.stderr)


def test_checkpoints_of_the_pre_block_layout_are_named_not_reused(ray_session, tmp_path, caplog):
    from pipeline.generate import to_generate
    from pipeline.plan import Plan

    flat = tmp_path / "gen-0123.parquet"  # where litho before plan blocks kept a batch
    flat.write_bytes(b"")
    with caplog.at_level("WARNING", logger="pipeline.generate"):
        _, _, todo = to_generate(Plan(TextbookGenerator(), 5, 0), tmp_path)
    assert todo == 5  # nothing reused
    assert any(
        "earlier litho version" in r.getMessage() and str(tmp_path) in r.getMessage() for r in caplog.records
    )
