"""Atomic publication: a new set of output folders is staged, then swapped in by renames.

A finished shard is never rewritten in place; readers see the old folder or the new one, never
half of each.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from pipeline import faults


class Snapshot:
    """Stages a new set of output folders and swaps them in atomically per folder."""

    def __init__(self, out: Path):
        self.out = out
        self.staging = out / ".litho" / f"staging-{uuid.uuid4().hex[:8]}"
        self.recover()

    def recover(self) -> None:
        """Undo a swap cut short (the process killed between two renames): a published folder that
        was moved aside and not yet replaced goes back, so the old set stays whole until the new one
        is swapped in; leftover staging folders are removed."""
        for trash in sorted((self.out / ".litho").glob("staging-*-old")):
            for moved in sorted(trash.iterdir()):
                if not (self.out / moved.name).exists():
                    os.replace(moved, self.out / moved.name)
            shutil.rmtree(trash, ignore_errors=True)
        for staging in (self.out / ".litho").glob("staging-*"):
            shutil.rmtree(staging, ignore_errors=True)

    def commit(self, names: tuple[str, ...], unchanged: bool) -> None:
        """Replace ``out/<name>`` by the staged folder (or keep the old one when ``unchanged``)."""
        if unchanged:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        trash = self.staging.with_name(self.staging.name + "-old")
        trash.mkdir(parents=True, exist_ok=True)
        for name in names:
            current, staged = self.out / name, self.staging / name
            if current.exists():
                (trash / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(current, trash / name)
                faults.phase("commit")
            if staged.exists():
                current.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, current)
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """A JSON file written by :func:`write_json`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
