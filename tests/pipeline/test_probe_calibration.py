"""Calibration: the probe must be able to fail. On real text whose bottom half is degraded (words
shuffled within each document), the top half by a score that detects the degradation must train a
better student than the bottom half beyond noise, and random vs random must show no difference.

The score is a tiny word-bigram model in the spirit of CCNet's perplexity filter: the share of a
document's adjacent word pairs that occur in other real text (man pages, pool side). It knows
nothing of which rows were degraded. The whole probe runs as ``litho probe`` would: Ray tasks, the
held-out pydoc evaluation set, probe.json and probe.png.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.probe import corpus, stats
from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow

TINY_STUDENT = [
    "student.hidden_size=64",
    "student.layers=2",
    "student.heads=4",
    "student.intermediate_size=256",
    "student.seq_len=128",
    "student.max_vocab=2048",
    "student.batch_size=8",
]


def _pairs(text: str) -> list[tuple[str, str]]:
    words = text.lower().split()
    return list(zip(words, words[1:]))


@pytest.fixture(scope="module")
def degraded_pool(tmp_path_factory):
    docs = [d["text"] for d in itertools.islice(corpus.documents("doc", "pool"), 160)]
    reference = {p for d in corpus.documents("man", "pool", 400_000) for p in _pairs(d["text"])}
    rng = random.Random(0)
    rows = []
    for i, text in enumerate(docs):
        degraded = i % 2 == 1
        if degraded:
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        pairs = _pairs(text)
        score = sum(p in reference for p in pairs) / max(1, len(pairs))
        rows.append({"text": text, "degraded": degraded, "bigram_hits": score})
    root = tmp_path_factory.mktemp("pool")
    (root / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train-00000-of-00001.parquet")
    return root, rows


def test_the_score_detects_the_degradation(degraded_pool):
    _, rows = degraded_pool
    clean = np.array([r["bigram_hits"] for r in rows if not r["degraded"]])
    bad = np.array([r["bigram_hits"] for r in rows if r["degraded"]])
    assert (clean[:, None] > bad[None, :]).mean() > 0.95  # AUC


def test_top_beats_bottom_beyond_noise_and_random_matches_random(ray_session, degraded_pool, tmp_path):
    """Over 30 s on one core: the probe trains a tiny student per arm and seed (top, bottom, two random
    halves) to the same token budget; a calibration needs all of them trained."""
    from pipeline.probe.run import run_probe

    root, _ = degraded_pool
    cfg = compose(
        f"pool={root}",
        f"output.dir={tmp_path / 'probe'}",
        "halves=[bigram_hits]",
        "middle_band=null",  # top and bottom only: the calibration needs no middle band
        "budget_tokens=20000",
        "seeds=3",
        "eval.builtin=[pydoc]",
        "eval.max_chars=40000",
        "filters_arm=false",
        *TINY_STUDENT,
        config_name="probe",
    )
    result = run_probe(cfg)
    assert (tmp_path / "probe" / "probe.json").is_file() and (tmp_path / "probe" / "probe.png").is_file()
    assert [a["name"] for a in result["arms"]] == [
        "random",
        "random_b",
        "top(bigram_hits)",
        "bottom(bigram_hits)",
    ]
    assert len(result["runs"]) == 12 and {r["train_tokens"] for r in result["runs"]} == {20000 // 128 * 128}

    bpb = {(r["arm"], r["seed"]): r["bpb"]["pydoc"] for r in result["runs"]}
    top_minus_bottom = [bpb[("top(bigram_hits)", s)] - bpb[("bottom(bigram_hits)", s)] for s in range(3)]
    diff = stats.summary(top_minus_bottom)
    noise = result["stats"]["pydoc"]["noise"]
    assert diff["ci95"][1] < 0, top_minus_bottom
    assert -diff["mean"] > noise["noise_floor"], (top_minus_bottom, noise)
    assert noise["random_vs_random"] == "no difference", noise
    assert result["stats"]["pydoc"]["arms"]["bottom(bigram_hits)"]["verdict"] == stats.WORSE

    # A rerun of the same config trains nothing: every arm x seed comes back from runs.jsonl.
    again = run_probe(cfg)
    assert again["stats"] == result["stats"]
    assert len((tmp_path / "probe" / "runs.jsonl").read_text().splitlines()) == 12
