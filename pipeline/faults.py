"""Fault injection for the reliability tests and bench/bench_faults.py: ``LITHO_FAULT=PHASE[:SECONDS]``
kills this process with SIGKILL ``SECONDS`` after the run enters ``PHASE`` (at once without them);
``LITHO_FAULT=generate+N`` once N teacher batches are checkpointed.

Phases, in run order: ``generate``, ``process`` (scoring, filtering, dedup), ``write`` (staging the
shards), ``commit`` (between the renames that swap the staged folders in), ``index`` (writing the
cross-run dedup index), ``pack`` and ``tokfiles`` (once the first shard's token files are staged).
Unset, every call is a dictionary lookup. A kill is the harshest fault a run meets (no exception handler, no ``finally``); docs/reliability.md lists what
a rerun must then give.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

ENV = "LITHO_FAULT"
PHASES = ("generate", "process", "write", "commit", "index", "pack", "tokfiles")


def phase(name: str, watch=None) -> None:
    """Mark the start of ``name``; kill the process here, or arm a timer, if ``LITHO_FAULT`` says so.

    ``LITHO_FAULT=generate+N`` (with ``watch``, the checkpoint directory) kills the run once N
    teacher batches are checkpointed: mid-generation whatever the machine's speed.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    if "+" in spec and watch is not None and spec.partition("+")[0] == name:
        files = int(spec.partition("+")[2])
        threading.Thread(target=_kill_at_files, args=(Path(watch), files), daemon=True).start()
        return
    wanted, _, delay = spec.partition(":")
    if wanted != name:
        return
    seconds = float(delay or 0)
    if seconds <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()


def _kill_at_files(directory: Path, files: int) -> None:
    while len(list(directory.rglob("gen-*.parquet"))) < files:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


_batches = 0


def actor_batch(directory) -> None:
    """In a teacher actor, between answering rows and checkpointing them: ``LITHO_FAULT=actor:N``
    kills the actor's process at its N-th checkpoint group, once per run (a marker file in ``directory`` keeps
    the restarted actor alive), so Ray must restart it and redo the batch."""
    global _batches
    spec = os.environ.get(ENV, "")
    if not spec.startswith("actor:") or directory is None:
        return
    _batches += 1
    if _batches != int(spec.partition(":")[2] or 1):
        return
    os.makedirs(directory, exist_ok=True)
    try:
        os.close(os.open(os.path.join(directory, ".litho-fault-fired"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
