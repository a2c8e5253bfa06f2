"""Live progress of the teacher phase in the driver: rows answered of the total, tokens, tok/s, ETA.

Every teacher actor keeps one small progress record beside the checkpoints
(:class:`pipeline.checkpoint_stream.ProgressRecord`: rows checkpointed, tokens decoded so far,
rows still in flight included, rewritten every :data:`~pipeline.checkpoint_stream.RECORD_S` seconds), so the driver sums them with no
extra actor and no message per row, the same way locally, on a cluster and under ``ray job submit``
(the driver must see ``output.dir``, as a resume does). Tokens move from the first decode step, so
the line says something long before the first row is done.

On a terminal it is a tqdm bar over the estimated work (rows done plus the in-flight rows' tokens);
otherwise (a job's log, a pipe) one plain line as soon as the first tokens are counted, then one
every ``interval`` seconds and one at the end.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.checkpoint_stream import read_records
from pipeline.cluster import is_terminal

log = logging.getLogger(__name__)


# An ETA waits this long after the first counted tokens: a default run's first line, from the prompts'
# first decode step after 21 s of actor start and model load, extrapolated 1:29:18 for a 75 s job.
ETA_AFTER_S = 5.0
# Seconds between two reads of the records: with the actors' RECORD_S, the first tokens show within a
# second of their decode step on average (a default run's first_tokens_s waits for them).
POLL_S = 0.5


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TeacherProgress:
    """Polls the actors' progress records of run ``run`` and reports rows, tokens, tok/s and ETA.

    Args:
        directory: The teacher's checkpoint directory (records live in its ``progress/`` folder).
        run: The run's id (the teacher stage's ``run`` argument).
        total: Rows this run asks the teacher for.
        interval: Seconds between two plain lines (not on a terminal).
        stream: Where the bar or lines go (default stderr); a terminal gets a bar.
    """

    def __init__(self, directory: Path, run: str, total: int, interval: float = 30.0, stream=None):
        self.directory, self.run = Path(directory), run
        self.total = int(total)
        self.interval = float(interval)
        self.stream = stream if stream is not None else sys.stderr
        self.rows = self.tokens = self.row_tokens = 0
        self.max_new_tokens = 0
        self.started = time.monotonic()
        self.first_tokens: float | None = None  # seconds from start to the first counted token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="litho-progress", daemon=True)
        self._bar = None

    def poll(self) -> None:
        """Sum the actors' latest records."""
        records = read_records(self.directory, self.run)
        self.rows = sum(r["rows"] for r in records)
        self.row_tokens = sum(r["row_tokens"] for r in records)
        self.tokens = max(self.tokens, sum(r["tokens"] for r in records))
        self.max_new_tokens = max((r["max_new_tokens"] for r in records), default=0)
        if self.tokens and self.first_tokens is None:
            self.first_tokens = time.monotonic() - self.started

    def done_share(self) -> float:
        """Estimated share of the work done: finished rows plus the in-flight rows' decoded tokens, a row
        counting as the finished rows' mean tokens (the teacher's cap until a row finishes)."""
        if not self.total:
            return 1.0
        per_row = self.row_tokens / self.rows if self.rows else self.max_new_tokens
        partial = (self.tokens - self.row_tokens) / per_row if per_row else 0.0
        return min(1.0, (self.rows + max(0.0, min(partial, self.total - self.rows - 0.5))) / self.total)

    def eta(self) -> float | None:
        """Seconds left at the rate of work since the first counted tokens (actor start and model load
        are behind us, not ahead); ``None`` (shown as ``?``) during the first :data:`ETA_AFTER_S`
        seconds of decoding, whose prefill-heavy first steps say nothing of the rate."""
        if self.rows >= self.total:
            return 0.0
        share = self.done_share()
        if self.first_tokens is None or share <= 0:
            return None
        decoding = time.monotonic() - self.started - self.first_tokens
        return decoding * (1 - share) / share if decoding >= ETA_AFTER_S else None

    def line(self) -> str:
        """``teacher: 96/256 rows (41%), 5,120 tokens, 95 tok/s, elapsed 0:00:54, ETA 0:01:30``: the
        percentage is the estimated work done (:meth:`done_share`), not only the finished rows."""
        elapsed = time.monotonic() - self.started
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        eta = self.eta()
        return (
            f"teacher: {self.rows:,}/{self.total:,} rows ({self.done_share():.0%}), {self.tokens:,} tokens,"
            f" {rate:.0f} tok/s, elapsed {_hms(elapsed)}, ETA {_hms(eta) if eta is not None else '?'}"
        )

    def _show(self) -> None:
        if self._bar is not None:
            elapsed = time.monotonic() - self.started
            self._bar.n = round(100 * self.done_share(), 1)
            eta = self.eta()
            self._bar.set_postfix_str(
                f"{self.rows:,}/{self.total:,} rows, {self.tokens:,} tokens, "
                f"{self.tokens / max(elapsed, 1e-9):.0f} tok/s, ETA {_hms(eta) if eta is not None else '?'}",
                refresh=False,
            )
            self._bar.refresh()
        else:
            print(self.line(), file=self.stream, flush=True)

    def _loop(self) -> None:
        last = None  # when the last plain line was printed (None: not yet, waiting for tokens)
        while not self._stop.wait(POLL_S):
            self.poll()
            now = time.monotonic()
            if (
                self._bar is not None
                or (last is None and self.tokens)
                or (last is not None and now - last >= self.interval)
            ):
                self._show()
                last = now

    def start(self) -> TeacherProgress:
        if is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=100,
                desc="teacher",
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| elapsed {elapsed}, {postfix}",
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
    directory: Path, run: str, total: int, interval: float = 30.0, enabled: bool = True
) -> Iterator[TeacherProgress | None]:
    """Report the teacher phase while the block runs (nothing when ``enabled`` is false)."""
    if not enabled or total <= 0:
        yield None
        return
    progress = TeacherProgress(directory, run, total, interval).start()
    try:
        yield progress
    finally:
        progress.stop()
