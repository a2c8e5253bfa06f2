"""The teacher stage outside Ray: rows checkpointed in groups as they finish, several batches in flight, and
the driver's progress read from the actors' progress records."""

from __future__ import annotations

import asyncio
import io
import re
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from generators.prompts.textbook import TextbookGenerator
from pipeline.checkpoint import read_block
from pipeline.checkpoint_stream import read_records
from pipeline.generate import GenerateStage
from pipeline.progress import TeacherProgress, teacher_progress

DUMMY = {"_target_": "generators.teachers.dummy.DummyTeacher"}


def _batches(n: int, *splits: int) -> list[dict]:
    plan = TextbookGenerator().plan(n, seed=0)
    edges = [0, *splits, n]
    parts = [plan[a:b] for a, b in zip(edges, edges[1:])]
    return [{k: np.asarray([r[k] for r in part], dtype=object) for k in part[0]} for part in parts]


def call(stage: GenerateStage, *batches: dict) -> list[dict]:
    """The stage's batches run concurrently on one event loop, as Ray Data runs an async UDF."""

    async def both():
        return await asyncio.gather(*(stage(b) for b in batches))

    return asyncio.run(both())


class Pipe(io.StringIO):
    def isatty(self) -> bool:  # a job log or a pipe: plain lines, no bar
        return False


def test_progress_counts_the_rows_and_tokens_of_this_run_only(tmp_path):
    earlier = GenerateStage(DUMMY, checkpoint_dir=str(tmp_path), run="earlier")
    stage = GenerateStage(DUMMY, checkpoint_dir=str(tmp_path), run="this")
    first, second = _batches(8, 5)
    call(earlier, first)  # an earlier run's batch: not this run's progress
    progress = TeacherProgress(tmp_path, "this", total=3, stream=Pipe())
    progress.poll()
    assert (progress.rows, progress.tokens) == (0, 0)
    (out,) = call(stage, second)
    progress.poll()
    progress.poll()  # a record is read again, never added twice
    # With checkpoints the stage hands on only failed rows (none here); the texts are in the files.
    assert len(out["id"]) == 0
    written = read_block(tmp_path, 0)  # rows without a plan block column are block 0
    mine = np.isin(written.column("id").to_numpy(zero_copy_only=False), second["id"])
    assert progress.rows == 3 == int(mine.sum())
    assert progress.tokens == int(np.sum(written.column("completion_tokens").to_numpy()[mine])) > 0
    assert [r["prompt_tokens"] for r in read_records(tmp_path, "this")] == [
        int(np.sum(written.column("prompt_tokens").to_numpy()[mine]))
    ]
    assert re.match(
        rf"teacher: 3/3 rows \(100%\), {progress.tokens:,} tokens, \d+ tok/s, elapsed 0:00:\d\d, ETA 0:00:00$",
        progress.line(),
    )


def test_rows_are_checkpointed_in_groups_and_batches_share_the_teacher(tmp_path):
    calls = []
    stage = GenerateStage({**DUMMY, "checkpoint_rows": 4}, checkpoint_dir=str(tmp_path), run="r")
    generate = stage.teacher.generate
    stage.teacher.generate = lambda requests: calls.append(len(requests)) or generate(requests)
    batches = _batches(12, 3, 6, 9)
    outs = call(stage, *batches)
    assert all(len(o["id"]) == 0 for o in outs)
    files = sorted(tmp_path.glob("block=000000/gen-*.parquet"))
    sizes = sorted(pq.read_metadata(f).num_rows for f in files)
    assert (
        sum(sizes) == 12 and max(sizes) <= 4 + 3
    )  # a group closes at 4 rows (a batch's rows arrive together)
    assert calls[0] == 12 and sum(calls) == 12  # the four batches in flight went to the teacher in one call


def test_an_actor_restarted_with_a_batch_asks_only_what_it_did_not_checkpoint(tmp_path):
    batch = _batches(6, 3)[0]
    call(GenerateStage(DUMMY, checkpoint_dir=str(tmp_path)), {k: v[:2] for k, v in batch.items()})
    again = GenerateStage(DUMMY, checkpoint_dir=str(tmp_path))  # Ray's new actor gets the whole batch again
    asked = []
    generate = again.teacher.generate
    again.teacher.generate = lambda requests: asked.extend(r.id for r in requests) or generate(requests)
    call(again, batch)
    assert asked == [batch["id"][2]]
    assert sorted(read_block(tmp_path, 0).column("id").to_pylist()) == sorted(batch["id"].tolist())


def test_plain_lines_start_with_the_first_tokens_and_end_with_a_final_one(tmp_path):
    stage = GenerateStage({**DUMMY, "seconds_per_request": 0.3}, checkpoint_dir=str(tmp_path), run="r")
    pipe = Pipe()
    progress = TeacherProgress(tmp_path, "r", total=8, interval=60, stream=pipe).start()
    call(stage, *_batches(8, 5))
    progress.stop()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2 and all(ln.startswith("teacher: ") for ln in lines)  # not one every second
    assert lines[-1].startswith("teacher: 8/8 rows (100%)")
    assert progress.first_tokens is not None


def test_disabled_or_nothing_to_do_prints_nothing(tmp_path, capsys):
    with teacher_progress(tmp_path, "r", 0):
        pass
    with teacher_progress(tmp_path, "r", 5, enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar(tmp_path, monkeypatch):
    from pipeline import cluster

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    progress = TeacherProgress(tmp_path, "r", total=4, stream=term).start()
    progress.stop()
    assert "teacher:   0%|" in term.getvalue() and "0/4 rows" in term.getvalue()  # tqdm's bar, not a line
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


_ = time  # noqa
