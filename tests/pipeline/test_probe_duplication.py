"""Positive control: repeated documents make a worse student than the same documents deduplicated, at
equal tokens (Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better"; Hernandez et
al. 2022, "Scaling Laws and Interpretability of Learning from Repeated Data"). The probe must see it.

Two pools of real /usr/share/doc passages: ``deduplicated`` holds each passage once, ``duplicated``
the same passages with a few of them repeated many times (most of its tokens are copies). Both arms
train on the same number of tokens; the whole probe runs as ``litho probe pools={...}`` would (Ray
tasks, the held-out pydoc set, random vs random for the noise floor, and a mix of the two pools).
"""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.probe import corpus, stats
from tests.pipeline.conftest import compose
from tests.pipeline.test_probe_calibration import TINY_STUDENT

pytestmark = pytest.mark.slow

UNIQUE, REPEATED, COPIES = 140, 8, 40  # passages; of them repeated; copies of each (about 3/4 of its tokens)


def write_pools(root, unique: int = UNIQUE, repeated: int = REPEATED, copies: int = COPIES):
    """``(duplicated, deduplicated)`` pool directories of the same real passages."""
    docs = [d["text"] for d in itertools.islice(corpus.documents("doc", "pool"), unique)]
    pools = {"deduplicated": docs, "duplicated": docs + docs[:repeated] * (copies - 1)}
    for name, texts in pools.items():
        (root / name / "data").mkdir(parents=True)
        pq.write_table(pa.table({"text": texts}), root / name / "data" / "train-00000-of-00001.parquet")
    return root / "duplicated", root / "deduplicated"


def test_deduplicated_beats_duplicated_beyond_noise(ray_session, tmp_path):
    """Over 30 s (9 tiny students, ~30 s on 2 busy cores): the probe's second positive control."""
    from pipeline.probe.run import run_probe

    duplicated, deduplicated = write_pools(tmp_path)
    result = run_probe(
        compose(
            f"pools={{deduplicated: {deduplicated}, duplicated: {duplicated}}}",  # random: the first pool
            f"output.dir={tmp_path / 'probe'}",
            "halves=[]",
            "budget_tokens=20000",
            "seeds=3",
            "eval.builtin=[pydoc]",
            "eval.max_chars=40000",
            "filters_arm=false",
            *TINY_STUDENT,
            config_name="probe",
        )
    )
    names = [a["name"] for a in result["arms"]]
    assert names == ["random", "random_b", "pool(duplicated)"]
    assert {r["train_tokens"] for r in result["runs"]} == {20000 // 128 * 128}
    noise = result["stats"]["pydoc"]["noise"]
    assert noise["random_vs_random"] == "no difference", noise
    won = stats.paired_difference(
        result["runs"], "pydoc", "random", "pool(duplicated)"
    )  # random: deduplicated
    assert won["ci95"][1] < 0 and -won["mean"] > noise["noise_floor"], (won, noise)
    assert won["verdict"] == "better than pool(duplicated) beyond noise"
    assert result["stats"]["pydoc"]["arms"]["pool(duplicated)"]["verdict"] == stats.WORSE
    assert result["pool"]["group_token_share"]["duplicated"] > 0.7  # the copies are most of the tokens
    assert "power: smallest detectable" in __import__("pipeline.probe.report", fromlist=["x"]).summary(result)
