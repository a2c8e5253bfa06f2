"""The teacher stage outside Ray: rows checkpointed in groups as they finish, several batches in flight, and
the driver's progress read from the actors' progress records."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from generators.prompts.textbook import TextbookGenerator
from pipeline.checkpoint import read_block
from pipeline.checkpoint_stream import read_records
from pipeline.generate import GenerateStage
from pipeline.progress import TeacherProgress, teacher_progress

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_eta_counts_from_the_first_tokens_and_waits_for_a_rate(tmp_path):
    import time

    progress = TeacherProgress(tmp_path, "r", total=10, stream=Pipe())
    progress.tokens, progress.max_new_tokens = 100, 100  # one row's worth of tokens: a tenth of the work
    progress.started = time.monotonic() - 40  # 40 s since the teacher phase began
    progress.first_tokens = 38.0  # the first tokens 2 s ago: no rate yet
    assert progress.eta() is None and progress.line().endswith("ETA ?")
    progress.first_tokens = 20.0  # 20 s of decoding did a tenth: 180 s to go (not 360 s from the start)
    assert progress.eta() == pytest.approx(180, abs=2)
    assert re.search(r"ETA 0:0[23]:\d\d$", progress.line())
    progress.rows = 10
    assert progress.eta() == 0.0


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


@pytest.mark.slow
def test_a_minhash_run_prints_no_arrow_fallback_and_reports_usage_and_cost(tmp_path):
    """Over 30 s: ``litho generate`` in a process of its own (its own Ray, whose workers' lines are the subject):
    the captured output has no ArrowConversionError line (the MinHash band keys are an Arrow list column),
    and the manifest, summary and report carry this run's teacher tokens and cost."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "pipeline.cli", "generate", "teacher=dummy", "teacher.duplicate_rate=0.2",
            "n=48", "cluster.teacher_batch_size=8", "teacher.checkpoint_rows=8", "++filters.lm=null",
            "dedup=minhash", "teacher.price={prompt: 0.5, completion: 2.0}", f"output.dir={out}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LITHO_FAULT"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert "ArrowConversionError" not in printed and "pickled python objects" not in printed, printed[-3000:]
    assert "teacher: 48/48 rows (100%)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [r for part in ("data", "rejected") for f in sorted((out / part).glob("*.parquet"))
            for r in pq.read_table(f, columns=["prompt_tokens", "completion_tokens"]).to_pylist()]  # fmt: skip
    usage = manifest["teacher_usage"]
    assert usage["rows"] == 48 == len(rows)
    assert usage["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows) > 0
    assert usage["completion_tokens"] == sum(r["completion_tokens"] for r in rows) > 0
    cost = (usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 2.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert re.search(rf"teacher cost \(USD, est\.\) +{cost:.4f}\n", done.stdout), done.stdout
    assert "teacher cost (estimated)" in (out / "report.html").read_text()
    assert len(list(out.glob(".litho/generations/*/block=*/gen-*.parquet"))) >= 6  # groups of 8 rows
