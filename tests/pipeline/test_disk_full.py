"""The output disk fills up (issue #13): one line naming the place, the shards published before intact."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import compose

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights; skipped where the machine gives neither)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _litho(out: Path, n: int) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pipeline.cli", "generate", "teacher=dummy", f"n={n}", "++filters.lm=null"]
    return subprocess.run(argv + [f"output.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "data").rglob("*"))
        if p.is_file()
    }


def test_a_full_disk_is_one_line_and_keeps_the_published_shards(small_disk, ray_session):
    """Over 30 s: a `litho generate` process filling a 1 MB tmpfs (what a full disk does to a whole run, its
    Ray instance included, is what it tests) after a small run published shards there (in this process)."""
    from pipeline.run import run

    out = small_disk / "run"
    run(compose("teacher=dummy", "n=16", "++filters.lm=null", f"output.dir={out}"))
    published = _digests(out)
    assert published
    full = _litho(out, 4000)  # about 3 MB of checkpoints and shards: more than the disk holds
    assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-3000:]
    error = [ln for ln in full.stderr.splitlines() if ln.startswith("litho: error: ")]
    assert len(error) == 1 and f"output.dir={out}: no space left on its device" in error[0], full.stderr[
        -3000:
    ]
    assert "Traceback" not in full.stderr
    assert _digests(out) == published  # the earlier shards are untouched
    assert not list(out.rglob(".gen-*.tmp*"))  # no half-written checkpoint left behind
