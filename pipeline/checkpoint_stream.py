"""A teacher actor's finished rows, checkpointed in small groups as they finish, and its progress record.

The teacher stage answers rows one by one across several batches (pipeline/teacher_stage.py), so it
checkpoints rows, not batches: a group is written when it holds ``checkpoint_rows`` rows, when its
oldest row has waited ``checkpoint_s`` seconds, or when a batch has all its rows answered (a batch
hands its result to Ray Data only once its rows are on disk: a row is never reported done and lost).
A crash loses at most one group. Each group is written one file per plan block, as
:func:`pipeline.checkpoint.write_batch` writes a batch (temporary name, then rename); the file's
timing covers the actor's time since its previous group, so the report's per-worker throughput
tiles the actor's timeline.

Beside the checkpoints, under ``progress/``, every actor keeps one small JSON record (rows and
tokens of this run, rewritten about once a second by rename): the driver sums them for the live
progress (pipeline/progress.py) without a message per row, locally, on a cluster and under
``ray job submit`` alike.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import faults
from pipeline.checkpoint import block_dir, write_batch

PROGRESS = "progress"  # folder of the per-actor progress records, beside the block=*/ folders
RECORD_S = 0.5  # seconds between two rewrites of an actor's record (only when it changed: a small file)


def worker_name() -> str:
    return f"{platform.node()}:{os.getpid()}"


class RowGroups:
    """Finished rows of one actor, waiting to be checkpointed in groups.

    Args:
        directory: The teacher's checkpoint folder (:mod:`pipeline.checkpoint`).
        rows: Rows per group (``teacher.checkpoint_rows``).
        seconds: Longest a finished row waits before its group is written (``teacher.checkpoint_s``).
    """

    def __init__(self, directory: Path, rows: int, seconds: float):
        self.directory, self.rows, self.seconds = Path(directory), max(1, int(rows)), float(seconds)
        self.worker = worker_name()
        self._lock = threading.Lock()
        self._rows: list[tuple[int, dict]] = []  # (plan block, row)
        self._oldest = 0.0
        self.window = None  # when the time the next group accounts for began (None: idle)
        self.written_rows = self.written_tokens = self.written_prompt_tokens = 0

    def start(self) -> None:
        """Work arrived: the next group's time starts now, if it has not started yet."""
        with self._lock:
            if self.window is None:
                self.window = time.time()

    def add(self, block: int, row: dict) -> None:
        with self._lock:
            if not self._rows:
                self._oldest = time.monotonic()
            self._rows.append((int(block), row))
        if self.due():
            self.flush()

    def due(self) -> bool:
        with self._lock:
            return bool(self._rows) and (
                len(self._rows) >= self.rows or time.monotonic() - self._oldest >= self.seconds
            )

    def flush(self, idle: bool = False) -> None:
        """Write every waiting row (one file per plan block). ``idle``: nothing is in flight any more."""
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return
            faults.actor_batch(self.directory)  # reliability tests only (LITHO_FAULT=actor:N)
            now = time.time()
            start = self.window if self.window is not None else now
            seconds = now - start
            blocks = np.asarray([b for b, _ in rows])
            for block in np.unique(blocks).tolist():
                mine = [r for b, r in rows if b == block]
                table = pa.table({k: [r[k] for r in mine] for k in mine[0]})
                # Each block's file gets its share of the group's seconds, back to back.
                share = seconds * len(mine) / len(rows)
                timing = {"started_at": start, "seconds": share, "worker": self.worker}
                try:
                    write_batch(block_dir(self.directory, block), table, timing)
                except OSError:  # a full disk: the rows not written wait for the next flush, which raises too
                    self._rows[:0] = [(b, r) for b, r in rows if b >= block]
                    raise
                start += share
            self.window = None if idle else now
            self.written_rows += len(rows)
            self.written_tokens += sum(int(r.get("completion_tokens") or 0) for _, r in rows)
            self.written_prompt_tokens += sum(int(r.get("prompt_tokens") or 0) for _, r in rows)


class ProgressRecord:
    """This actor's line of the live progress: ``progress/<worker>.json``, rewritten by a thread.

    Args:
        directory: The teacher's checkpoint folder.
        run: The run's id (a record of another run is not this run's progress).
        groups: The actor's :class:`RowGroups` (rows and tokens checkpointed).
        meter: Tokens decoded so far (:class:`generators.teachers.stream.TokenMeter`).
        max_new_tokens: The teacher's cap per row (the driver's estimate of a row's tokens until rows finish).
        interval: Seconds between two writes; the same thread writes a group that waited too long.
    """

    def __init__(self, directory: Path, run: str, groups: RowGroups, meter, max_new_tokens: int,
                 interval: float = RECORD_S):  # fmt: skip
        self.path = Path(directory) / PROGRESS / f"{groups.worker.replace(':', '-')}.json"
        self.run, self.groups, self.meter = run, groups, meter
        self.max_new_tokens, self.interval = int(max_new_tokens), float(interval)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last = None
        self._thread = threading.Thread(target=self._loop, name="litho-progress-record", daemon=True)
        self._thread.start()

    def state(self) -> dict:
        return {
            "run": self.run,
            "worker": self.groups.worker,
            "rows": self.groups.written_rows,
            "row_tokens": self.groups.written_tokens,
            "prompt_tokens": self.groups.written_prompt_tokens,
            "tokens": self.meter.tokens,
            "max_new_tokens": self.max_new_tokens,
        }

    def write(self) -> None:
        """Rewrite the record (by rename) if it changed; the teacher stage also calls it after a batch."""
        with self._lock:  # the stage's thread and the record's own
            state = self.state()
            if state == self._last:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps({**state, "updated": time.time()}))
            os.replace(tmp, self.path)
            self._last = state

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.groups.due():
                    self.groups.flush()
                self.write()
            except OSError:  # a full disk: the batch's own flush raises it with the path
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.write()


def read_records(directory: Path, run: str) -> list[dict]:
    """The progress records of run ``run`` under ``directory`` (a record being replaced is skipped)."""
    records = []
    for path in sorted((Path(directory) / PROGRESS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("run") == run:
            records.append(record)
    return records


def teacher_usage(directory: Path, run: str, price: dict | None) -> dict:
    """This run's teacher usage from its actors' records: rows answered, prompt and completion tokens, and
    the estimated cost in USD when ``price`` (per million prompt / completion tokens) is given."""
    records = read_records(directory, run)
    usage = {
        "rows": sum(r["rows"] for r in records),
        "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records),
        "completion_tokens": sum(r["row_tokens"] for r in records),
    }
    if price:
        usage["price_per_million"] = dict(price)
        usage["cost_usd"] = round(
            (usage["prompt_tokens"] * price["prompt"] + usage["completion_tokens"] * price["completion"])
            / 1e6,
            6,
        )
    return usage
