"""The probe's middle bands, pools and mixtures, repeated data, checkpoint averaging and power plans
(plain numpy and scipy: no Ray, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t

from generators.errors import ConfigError
from pipeline.probe import arms, power, stats
from pipeline.probe.pool import Pool, concat
from pipeline.probe.student import checkpoints


@pytest.fixture
def two_pools():
    rng = np.random.default_rng(1)
    real = Pool([f"r{i}" for i in range(200)], {"q": rng.normal(size=200)}, np.full(200, "", dtype=object))
    synth = Pool(
        [f"s{i}" for i in range(100)],
        {"q": rng.normal(size=100), "ifd_v1": rng.random(100)},
        np.full(100, "", dtype=object),
    )
    pool = concat({"real": real, "synthetic": synth})
    tokens = rng.integers(50, 150, len(pool.texts))
    return pool, tokens


def test_concat_labels_rows_by_pool_and_fills_missing_scores(two_pools):
    pool, _ = two_pools
    assert (
        pool.group_column == "pool"
        and list(pool.groups[:2]) == ["real", "real"]
        and pool.groups[-1] == "synthetic"
    )
    assert np.isnan(pool.columns["ifd_v1"][:200]).all() and np.isfinite(pool.columns["ifd_v1"][200:]).all()


def test_mix_arms_hold_their_shares_at_one_budget(two_pools):
    pool, tokens = two_pools
    built = arms.build_arms(
        {},
        [],
        {},
        {},
        False,
        False,
        pool.columns,
        pools=["real", "synthetic"],
        mixes=[{"real": 0.75, "synthetic": 0.25}],
    )
    assert [a.name for a in built] == [
        "random",
        "random_b",
        "pool(synthetic)",
        "mix(real=0.75,synthetic=0.25)",
    ]
    for arm in built:  # random and random_b: the first pool
        rows = arms.select(arm, tokens, pool.columns, 8_000, seed=0, labels=pool.groups)
        assert 8_000 <= tokens[rows].sum() < 8_000 + tokens.max() and len(set(rows)) == len(rows)
        share = tokens[rows][pool.groups[rows] == "real"].sum() / tokens[rows].sum()
        want = {"random": 1.0, "random_b": 1.0, "pool(synthetic)": 0.0}.get(arm.name, 0.75)
        assert abs(share - want) < 0.03, (arm.name, share)


@pytest.mark.parametrize(
    "mix, pools, message",
    [
        ({"real": 0.5, "web": 0.5}, ["real", "synthetic"], "mix.web: no such pool; the pools are"),
        ({"real": 0.5, "synthetic": 0.6}, ["real", "synthetic"], "the shares add up to 1.1"),
        ({"real": 1.0}, ["real"], "needs pools="),
        ({"real": 0, "synthetic": 1}, ["real", "synthetic"], r"mix.real=0: give a number in \(0, 1\]"),
    ],
)
def test_bad_mixes_are_one_line_errors(mix, pools, message):
    with pytest.raises(ConfigError, match=message):
        arms.check_mix(mix, pools)


def test_halves_bring_the_middle_band(two_pools):
    pool, tokens = two_pools
    built = arms.build_arms({}, ["q"], {}, {}, False, False, pool.columns, middle=[0.25, 0.75])
    assert [a.name for a in built][2:] == ["top(q)", "bottom(q)", "band(q,0.25-0.75)"]
    rows = arms.select(built[-1], tokens, pool.columns, 8_000, seed=0)
    low, high = np.quantile(pool.columns["q"], [0.25, 0.75])
    assert pool.columns["q"][rows].min() >= low and pool.columns["q"][rows].max() <= high
    with pytest.raises(ConfigError, match="probe.middle_band"):
        arms.build_arms({}, ["q"], {}, {}, False, False, pool.columns, middle=[0.75, 0.25])


def test_repeats_fill_a_budget_the_rows_cannot_hold_once(two_pools):
    pool, tokens = two_pools
    arm = arms.Arm("pool(synthetic)", "mix", shares=(("synthetic", 1.0),))
    held = tokens[pool.groups == "synthetic"].sum()
    with pytest.raises(ConfigError, match="max_repeats"):
        arms.select(arm, tokens, pool.columns, int(held * 2), seed=0, labels=pool.groups)
    rows = arms.select(arm, tokens, pool.columns, int(held * 2.5), seed=0, labels=pool.groups, max_repeats=3)
    counts = np.bincount(rows)
    assert counts.max() <= 3 and tokens[rows].sum() >= held * 2.5 and (pool.groups[rows] == "synthetic").all()
    with pytest.raises(ConfigError, match="even repeated 3 times"):
        arms.select(arm, tokens, pool.columns, int(held * 3.5), seed=0, labels=pool.groups, max_repeats=3)


def test_t_table_matches_scipy_and_seeds_for_meets_the_target():
    for q, table in stats.T_TABLE.items():
        assert np.allclose(table, [t.ppf(q, d) for d in range(1, 31)], atol=6e-5)
    n = stats.seeds_for(0.01, 0.005)
    assert stats.detectable(0.01, n) <= 0.005 < stats.detectable(0.01, n - 1)
    assert stats.seeds_for(math.nan, 0.005) is None


def test_power_plan_scales_seeds_tokens_and_time():
    noise = {"diff": {"sd": 0.01}}
    run = dict(
        arms=5,
        parallel=2,
        train_s=10.0,
        eval_s=2.0,
        parameters=2_000_000,
        eval_tokens=50_000,
        evals=1,
        noise_exponent=0.5,
        gpu_flops=1e14,
    )
    plan = power.plan(noise, seeds=3, budget=20_000, target=0.005, run=run)
    now = stats.detectable(0.01, 3)
    assert plan["detectable"] == pytest.approx(now) and plan["seeds"] == stats.seeds_for(0.01, 0.005)
    assert plan["tokens_per_arm"] == math.ceil(20_000 * (now / 0.005) ** 2)  # spread ~ budget^-0.5
    by_seeds = plan["by_seeds"]
    assert by_seeds["hours_here"] == pytest.approx((10 + 2) * 5 * plan["seeds"] / 2 / 3600)
    flops = 6 * 2e6 * 20_000 + 2 * 2e6 * 50_000
    assert by_seeds["hours_one_gpu"] == pytest.approx(flops * 5 * plan["seeds"] / 1e14 / 3600)
    line = power.describe(plan)
    assert (
        line.startswith(f"power: smallest detectable {now:.4f}; to detect 0.005 bits/byte: ")
        and " or " in line
    )


def test_checkpoints_span_the_end_of_training():
    assert checkpoints(100, 1, 0.2) == [100]
    assert checkpoints(100, 3, 0.2) == [80, 90, 100]
    assert checkpoints(3, 5, 0.2) == [2, 3]  # few steps: no step twice


def test_bits_per_byte_averages_the_last_checkpoints():
    from dataclasses import replace

    from pipeline.probe.run import evaluated_student
    from pipeline.probe.student import StudentConfig, bits_per_byte, build_vocab

    rng = np.random.default_rng(0)
    stream = rng.integers(1, 40, 16 * 4 * 10)
    stream[::20] = 0
    vocab = build_vocab(stream, [], None)
    docs = [vocab.encode(rng.integers(1, 40, 50)) for _ in range(3)]
    evals = {"x": (docs, 200)}
    cfg = StudentConfig(
        hidden_size=32, layers=1, heads=2, intermediate_size=64, seq_len=16, batch_size=4, dtype="fp32"
    )
    model, last = evaluated_student(stream, evals, vocab, cfg, seed=0)
    assert "checkpoints" not in last and last["bpb"]["x"] == pytest.approx(
        bits_per_byte(model, docs, 200, vocab, cfg)
    )
    _, averaged = evaluated_student(
        stream, evals, vocab, replace(cfg, average_last=3, average_span=0.5), seed=0
    )
    assert [c["step"] for c in averaged["checkpoints"]] == [5, 8, 10]
    values = [c["result"]["x"] for c in averaged["checkpoints"]]
    assert averaged["bpb"]["x"] == pytest.approx(np.mean(values)) and values[-1] == pytest.approx(
        last["bpb"]["x"]
    )
