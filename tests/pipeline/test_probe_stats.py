"""The probe's statistics: intervals, the noise floor, the detectable difference and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.probe import stats


def _results(values: dict[str, list[float]]) -> list[dict]:
    return [
        {"arm": arm, "seed": s, "bpb": {"ev": v}}
        for arm, per_seed in values.items()
        for s, v in enumerate(per_seed)
    ]


def test_summary_is_the_t_interval():
    s = stats.summary([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == 1.0
    # t(0.975, 2) = 4.302653; half-width = 4.302653 * 1 / sqrt(3)
    assert s["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert stats.summary([5.0])["ci95"] is None


def test_detectable_difference_uses_power_80_and_alpha_5():
    # t(0.975, 4) = 2.776445, t(0.8, 4) = 0.940965
    assert stats.detectable(0.01, 5) == pytest.approx((2.776445 + 0.940965) * 0.01 / math.sqrt(5), rel=1e-5)
    assert math.isnan(stats.detectable(0.01, 1))


def test_verdicts_follow_paired_differences_and_the_noise_floor():
    base = [3.00, 3.10, 2.95, 3.05]
    noise = [b + d for b, d in zip(base, [0.004, -0.003, 0.002, -0.001])]
    clear = [b - 0.05 + d for b, d in zip(base, [0.001, -0.002, 0.0, 0.001])]
    worse = [b + 0.05 for b in base]
    # Consistently a little lower, but by less than random differs from random: not beyond noise.
    tiny = [b - 0.002 for b in base]
    out = stats.compare(
        _results({"random": base, "random_b": noise, "clear": clear, "worse": worse, "tiny": tiny}), "ev"
    )
    arms = out["arms"]
    assert arms["clear"]["verdict"] == stats.BEATS
    assert arms["worse"]["verdict"] == stats.WORSE
    assert arms["tiny"]["diff_vs_random"]["ci95"][1] < 0  # significant ...
    assert arms["tiny"]["verdict"] == stats.SAME  # ... but inside the noise floor
    assert arms["random_b"]["verdict"] == "no difference"
    assert out["noise"]["noise_floor"] > 0.002
    d = arms["clear"]["diff_vs_random"]
    assert d["per_seed"] == pytest.approx([-0.049, -0.052, -0.05, -0.049])


def test_seed_luck_cancels_in_the_paired_difference():
    # Seeds vary by 0.2 bits/byte, the arm is 0.01 better at every seed: unpaired intervals would overlap.
    base = [2.8, 3.0, 3.2]
    out = stats.compare(
        _results(
            {
                "random": base,
                "random_b": [b + e for b, e in zip(base, [0.001, -0.001, 0.0])],
                "a": [b - 0.01 for b in base],
            }
        ),
        "ev",
    )
    assert out["arms"]["a"]["bpb"]["half_width"] > 0.2
    assert out["arms"]["a"]["verdict"] == stats.BEATS


def test_random_vs_random_that_differs_says_so():
    base = [3.0, 3.1, 3.2]
    out = stats.compare(
        _results({"random": base, "random_b": [b + 0.05 + e for b, e in zip(base, [0, 0.001, -0.001])]}), "ev"
    )
    assert out["noise"]["random_vs_random"] == "differs: more seeds needed"


def test_length_correlation():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 1000, 200)
    assert stats.length_correlation(lengths * 2.0 + 1, lengths) == pytest.approx(1.0)
    assert abs(stats.length_correlation(rng.normal(size=200), lengths)) < 0.2
    with_nan = np.where(np.arange(200) % 3 == 0, np.nan, -lengths.astype(float))
    assert stats.length_correlation(with_nan, lengths) == pytest.approx(-1.0)
