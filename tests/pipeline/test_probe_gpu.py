"""The GPU preset's pieces on the CPU: a pack built here trains, in pipeline/probe/gpu.py, the very
students ``litho probe`` trains (same rows, same seeds: the same bits per byte), a pool too small for
the budget is an error unless ``--fit`` lowers it, and the pack reads back with every zstd decoder here."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from pipeline.probe import corpus, gpu, pack
from pipeline.probe.student import StudentConfig, Vocab

TINY = [
    "student.hidden_size=32",
    "student.layers=1",
    "student.heads=2",
    "student.intermediate_size=64",
    "student.seq_len=64",
    "student.max_vocab=1024",
    "student.batch_size=8",
    "student.dtype=fp32",
    "student.device=cpu",
    "student.average_last=2",
]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("pool"))


def write_pool(root):
    """60 real passages with a score ``q`` (their order), as a litho output directory."""
    texts = [d["text"] for d in itertools.islice(corpus.documents("doc", "pool"), 60)]
    (root / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": texts, "q": np.arange(len(texts), dtype=float)}), root / "data" / "t.parquet"
    )
    return root


def overrides(pool, out, *more):
    return [
        f"pool={pool}",
        f"output.dir={out}",
        "halves=[q]",
        "seeds=2",
        "eval.builtin=[pydoc]",
        "eval.max_chars=20000",
        "filters_arm=false",
        *TINY,
        *more,
    ]


def test_the_runner_trains_what_litho_probe_trains(pool, tmp_path):
    from pipeline.probe.run import train_and_evaluate

    meta = pack.build(overrides(pool, tmp_path / "pack", "budget_tokens=4000"))
    assert meta["arms"] == ["random", "random_b", "top(q)", "bottom(q)", "band(q,0.25-0.75)"]
    assert meta["packed_bytes"] < meta["raw_bytes"] and meta["budget_tokens"] == 4000
    report = gpu.run(tmp_path / "pack", tmp_path / "out", device="cpu")
    assert report["seeds_complete"] == [0, 1] and set(report["stats"]["pydoc"]["arms"]) == set(meta["arms"])
    assert "power: smallest detectable" in (tmp_path / "out" / "probe-gpu.md").read_text()
    # The same arm x seed through litho probe's task function: the same bits per byte.
    _, arrays = gpu.load(tmp_path / "pack")
    rows = arrays["rows"][arrays["rows_offsets"][2] : arrays["rows_offsets"][3]]  # the pack's third student
    arm, seed = meta["runs"][2]
    docs = [
        arrays["eval_pydoc_ids"][a:b].astype(np.int64)
        for a, b in itertools.pairwise(arrays["eval_pydoc_offsets"])
    ]
    v = meta["vocab"]
    vocab = Vocab(np.zeros(1, dtype=np.int32), v["size"], v["rare_id"], v["rare_members"], v["size"])
    evals = {"pydoc": (docs, meta["eval_sets"]["pydoc"]["bytes"])}
    flat = arrays["pool_ids"].astype(np.int32)
    want = train_and_evaluate(
        arm, seed, rows, flat, arrays["pool_offsets"], 4000, evals, vocab, meta["student"]
    )
    got = next(
        r
        for r in map(json.loads, (tmp_path / "out" / "runs.jsonl").read_text().splitlines())
        if (r["arm"], r["seed"]) == (arm, seed)
    )
    assert got["bpb"]["pydoc"] == pytest.approx(want["bpb"]["pydoc"], abs=1e-6)
    assert len(got["checkpoints"]) == 2 == StudentConfig.from_dict(meta["student"]).average_last
    # A rerun trains nothing again.
    again = gpu.run(tmp_path / "pack", tmp_path / "out", device="cpu")
    assert (
        again["stats"] == report["stats"]
        and len((tmp_path / "out" / "runs.jsonl").read_text().splitlines()) == 10
    )


def test_a_budget_the_pool_cannot_fill_is_fitted_only_when_asked(pool, tmp_path):
    big = overrides(pool, tmp_path / "pack", "budget_tokens=10000000", "max_repeats=4")
    with pytest.raises(ConfigError, match="even repeated 4 times"):
        pack.build(big)
    meta = pack.build(big, fit=True)
    assert 0 < meta["budget_tokens"] < 10_000_000 and meta["budget_wanted"] == 10_000_000
    assert meta["budget_tokens"] % 64 == 0 and meta["tokens_per_parameter"] == round(
        meta["budget_tokens"] / meta["parameters"], 2
    )


def test_the_pack_reads_back_with_every_decoder_here(pool, tmp_path, monkeypatch):
    pack.build(overrides(pool, tmp_path / "pack", "budget_tokens=2000"))
    path = tmp_path / "pack" / "pack.npz.zst"
    decoded = gpu.decompress(path)  # the zstd program, when the machine has it
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no zstd program: pyarrow
    assert (
        gpu.decompress(path) == decoded
        and len(decoded) == json.loads((tmp_path / "pack" / "pack.json").read_text())["raw_bytes"]
    )
