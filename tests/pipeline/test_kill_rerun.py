"""kill -9 of a whole run, then a rerun: the outputs are byte-identical to an uninterrupted run's
(issue #13). Every phase and several moments per phase: bench/bench_faults.py; here one kill mid-
generation (then a rerun), one between the renames that publish the shards (the old set must come
back whole), a teacher actor killed mid-batch, and one kill while the token files are written."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import compose

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def overrides(out: Path, n: int = 48) -> list[str]:
    """A small plan with the dummy teacher, packing, every token format and a cross-run dedup index."""
    return [
        "teacher=dummy",
        "teacher.seconds_per_request=0.05",  # generation lasts seconds: a kill lands mid-phase
        "teacher.duplicate_rate=0.1",
        f"n={n}",
        "cluster.teacher_batch_size=8",
        "teacher.checkpoint_rows=8",  # rows are checkpointed in groups of 8: a kill lands between groups
        "++filters.lm=null",
        "output.pack_seq_len=128",
        "output.token_formats=[megatron,nanotron,numpy]",
        "output.rows_per_shard=10",
        "dedup=minhash",
        f"dedup.minhash.index_dir={out}-index",
        f"output.dir={out}",
    ]


def litho_run(out: Path, fault: str, n: int = 48, timeout: float = 600) -> subprocess.CompletedProcess:
    """``litho generate`` in a process of its own, which ``LITHO_FAULT`` kills (kill -9 of a whole run)."""
    argv = [sys.executable, "-m", "pipeline.cli", "generate", *overrides(out, n)]
    env = {k: v for k, v in os.environ.items() if k != "LITHO_FAULT"}
    env["LITHO_FAULT"] = fault
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -9, (
        f"the fault did not kill the run (exit {result.returncode}):\n" + result.stderr[-3000:]
    )


def clean_run(out: Path) -> None:
    """The same run in this process on the tests' Ray instance (a run or a rerun that nothing kills
    whole needs no process of its own, nor a Ray start)."""
    from pipeline.run import run

    run(compose(*overrides(out)))


def digests(out: Path) -> dict[str, str]:
    """Every published file (shards, packed shards, token files) by path, as a hash of its bytes (the
    output folder's path, which Megatron's blend files name, replaced by a placeholder: a copied run still
    names the folder it was written in)."""
    files = [
        p
        for folder in ("data", "rejected", "packed", "tokenized")
        for p in sorted((out / folder).rglob("*"))
        if p.is_file()
    ]

    def normalized(data: bytes) -> bytes:
        return re.sub(rb'(?<=[\s"])/[^\s"]*/tokenized/megatron/', b"<out>/tokenized/megatron/", data)

    return {str(p.relative_to(out)): hashlib.sha256(normalized(p.read_bytes())).hexdigest() for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("reference") / "run"
    clean_run(out)
    found = digests(out)
    assert any(k.startswith("data/") for k in found) and any(k.startswith("packed/") for k in found)
    assert any(k.endswith(".idx") for k in found) and any(k.endswith(".ds") for k in found)
    return out, found


def test_killed_mid_generation_reruns_to_the_same_bytes(reference, tmp_path):
    """Over 30 s: the killed run is a `litho generate` process of its own, starting Ray (kill -9 of a whole
    run needs one); the rerun runs here."""
    out = tmp_path / "run"
    killed(litho_run(out, "generate+2"))
    kept = list((out / ".litho").rglob("gen-*.parquet"))
    assert 0 < len(kept) < 6, kept  # killed while the teacher was answering: some batches are kept
    clean_run(out)
    assert digests(out) == reference[1]
    assert not list((out / ".litho").glob("staging-*"))


def test_killed_while_publishing_keeps_the_old_set_whole(reference, tmp_path):
    """Over 30 s: `litho generate` processes of their own (killed between the renames that publish, then
    rerun): kill -9 of a whole run needs a process of its own."""
    from pipeline.output.snapshot import Snapshot

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)  # a published run, with its checkpoints
    killed(litho_run(out, "commit", n=56))  # more rows: the new shards differ, so they are swapped in
    assert not (out / "data").exists()  # killed between moving data/ aside and moving the new one in
    Snapshot(out)  # what the next run does first: the swap cut short is undone
    assert digests(out) == reference[1]
    assert not list((out / ".litho").glob("staging-*"))


def test_a_teacher_actor_killed_mid_batch_is_restarted_and_nothing_is_lost_or_doubled(
    reference, tmp_path, monkeypatch
):
    """A run here, on the tests' Ray, whose teacher actor kills itself at its second checkpoint group
    (``LITHO_FAULT=actor:2`` reaches the actor through its runtime env): Ray restarts it, the run finishes."""
    out = tmp_path / "run"
    monkeypatch.setenv("LITHO_FAULT", "actor:2")
    clean_run(out)
    assert list((out / ".litho").rglob(".litho-fault-fired")), "the actor was not killed"
    assert digests(out) == reference[1]


def test_killed_while_writing_token_files_reruns_to_the_same_bytes(reference, tmp_path):
    """Over 30 s. On a copy of the reference run without its token files: a `litho generate` process of its own
    (starting Ray and Python), killed once the first shard's token files are staged; then the rerun here."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)  # its checkpoints: nothing is generated again
    shutil.rmtree(out / "tokenized")
    (out / "manifest.json").unlink()
    killed(litho_run(out, "tokfiles"))
    assert list((out / ".litho").glob("staging-*")) and not (out / "tokenized").exists()
    clean_run(out)
    assert digests(out) == reference[1]
    assert not list((out / ".litho").glob("staging-*"))
