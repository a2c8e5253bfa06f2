"""Live progress of the teacher phase in the driver: rows answered of the total, teacher tok/s, ETA.

The count comes from the checkpoint files the teacher actors write (one per finished batch, renamed
into place whole: pipeline/checkpoint.py), so it needs no extra actor or message and is the same
locally, on a cluster and under ``ray job submit`` (the driver must see ``output.dir``, as a resume
does). On a terminal it is a tqdm bar; otherwise (a job's log, a pipe) one plain line every
``interval`` seconds and one at the end.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.cluster import is_terminal

log = logging.getLogger(__name__)


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TeacherProgress:
    """Polls ``directory`` for new checkpoint files and reports rows, tokens, tok/s and ETA.

    Args:
        directory: The checkpoint directory the teacher stage writes ``gen-*.parquet`` files to.
        total: Rows this run asks the teacher for.
        interval: Seconds between two plain lines (not on a terminal).
        stream: Where the bar or lines go (default stderr); a terminal gets a bar.
    """

    def __init__(self, directory: Path, total: int, interval: float = 30.0, stream=None):
        self.directory = Path(directory)
        self.total = int(total)
        self.interval = float(interval)
        self.stream = stream if stream is not None else sys.stderr
        self.seen = set(self._files())  # an earlier run's files are not this run's progress
        self.rows = self.tokens = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="litho-progress", daemon=True)
        self._bar = None

    def _files(self) -> list[Path]:
        return sorted(self.directory.rglob("gen-*.parquet")) if self.directory.is_dir() else []

    def poll(self) -> None:
        """Count the files that appeared since the last poll."""
        for path in self._files():
            if path in self.seen:
                continue
            try:
                table = pq.read_table(path, columns=["completion_tokens"])
            except (OSError, ValueError):  # being swapped in on a slow filesystem: next poll
                continue
            self.seen.add(path)
            self.rows += table.num_rows
            self.tokens += int(sum(v for v in table.column(0).to_pylist() if v))

    def line(self) -> str:
        """``teacher: 96/256 rows (38%), 5,120 tokens, 95 tok/s, elapsed 0:00:54, ETA 0:01:30``."""
        elapsed = time.monotonic() - self.started
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        share = self.rows / self.total if self.total else 1.0
        eta = elapsed * (self.total - self.rows) / self.rows if self.rows else None
        return (
            f"teacher: {self.rows:,}/{self.total:,} rows ({share:.0%}), {self.tokens:,} tokens, {rate:.0f} tok/s,"
            f" elapsed {_hms(elapsed)}, ETA {_hms(eta) if eta is not None else '?'}"
        )

    def _show(self) -> None:
        if self._bar is not None:
            elapsed = time.monotonic() - self.started
            self._bar.n = min(self.rows, self.total)
            self._bar.set_postfix_str(f"{self.tokens / max(elapsed, 1e-9):.0f} tok/s", refresh=False)
            self._bar.refresh()
        else:
            print(self.line(), file=self.stream, flush=True)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0 if self._bar is not None else min(self.interval, 5.0)):
            self.poll()
            if self._bar is not None or time.monotonic() - last >= self.interval:
                self._show()
                last = time.monotonic()

    def start(self) -> TeacherProgress:
        if is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, desc="teacher", unit="rows", file=self.stream, dynamic_ncols=True
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        self._show()
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def teacher_progress(
    directory: Path, total: int, interval: float = 30.0, enabled: bool = True
) -> Iterator[None]:
    """Report the teacher phase while the block runs (nothing when ``enabled`` is false)."""
    if not enabled or total <= 0:
        yield
        return
    progress = TeacherProgress(directory, total, interval).start()
    try:
        yield
    finally:
        progress.stop()
