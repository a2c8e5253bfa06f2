"""Positive control: repeated documents make a worse student than the same documents deduplicated, at
equal tokens (Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better"; Hernandez et
al. 2022, "Scaling Laws and Interpretability of Learning from Repeated Data"). The probe must see it.

This is bench/bench_probe_controls.py at its smallest size (a tiny student, 20k tokens per arm, 3
seeds); the bench runs it at the default probe size. The whole probe runs as ``litho probe
pools={deduplicated: ..., duplicated: ...}`` would: Ray tasks, the held-out pydoc set, random vs
random (over the deduplicated pool) for the noise floor.
"""

from __future__ import annotations

import pytest

from bench.bench_probe_controls import TINY, control
from pipeline.probe import stats

pytestmark = pytest.mark.slow


def test_deduplicated_beats_duplicated_beyond_noise(ray_session, tmp_path):
    """Over 30 s (9 tiny students, ~30 s on 2 busy cores): the probe's second positive control."""
    result = control(tmp_path, unique=140, repeated=8, copies=40, overrides=[*TINY, "seeds=3"])
    assert [a["name"] for a in result["arms"]] == ["random", "random_b", "pool(duplicated)"]
    assert {r["train_tokens"] for r in result["runs"]} == {20000 // 128 * 128}
    assert result["pool"]["group_token_share"]["duplicated"] > 0.7  # copies are most of the tokens
    noise = result["stats"]["pydoc"]["noise"]
    assert noise["random_vs_random"] == "no difference", noise
    won = result["control"]["pydoc"]  # deduplicated (the random arms) minus duplicated, paired by seed
    assert won["ci95"][1] < 0 and -won["mean"] > noise["noise_floor"], (won, noise)
    assert won["verdict"] == "better than pool(duplicated) beyond noise"
    assert result["stats"]["pydoc"]["arms"]["pool(duplicated)"]["verdict"] == stats.WORSE
