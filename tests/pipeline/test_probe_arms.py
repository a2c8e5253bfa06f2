"""Arms: which rows each arm takes, at exactly one token budget (plain numpy, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from generators.errors import ConfigError
from pipeline.probe import arms
from pipeline.probe.arms import Arm


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    n = 400
    tokens = rng.integers(20, 400, n)
    columns = {
        "quality": rng.normal(size=n),
        "n_tokens": tokens.astype(float),
        "length_bias": tokens + rng.normal(scale=5, size=n),
    }
    return tokens, columns


def test_every_arm_fills_the_same_budget_exactly(pool):
    tokens, columns = pool
    lengths = tokens - 1  # stream tokens per row = its tokens plus the separator that leads it
    flat = np.arange(int(lengths.sum())) % 50
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    budget = 20_000
    spec = arms.build_arms({}, ["quality"], {"quality": [0.2, 0.8]}, {"quality": 0.5}, True, False, columns)
    assert (
        len(spec) == 2 + 2 + 1 + 1 + 4
    )  # random pair, halves, band, weighted, and the four stratified twins
    for arm in spec:
        rows = arms.select(arm, tokens, columns, budget, seed=3, bins=arms.length_bins(tokens, 4))
        assert len(set(rows)) == len(rows)
        assert tokens[rows].sum() >= budget
        out = arms.stream(rows, flat, offsets, budget, separator=-1)
        assert len(out) == budget and out[0] == -1
        assert (out == -1).sum() == len(rows)  # every chosen row starts inside the budget


def test_top_and_bottom_take_the_ends_of_the_score(pool):
    tokens, columns = pool
    top = arms.select(Arm("t", "top", "quality"), tokens, columns, 10_000, seed=0)
    bottom = arms.select(Arm("b", "bottom", "quality"), tokens, columns, 10_000, seed=0)
    q = columns["quality"]
    median_by_tokens = np.sort(q)[np.searchsorted(np.cumsum(tokens[np.argsort(q)]), tokens.sum() / 2)]
    assert q[top].min() >= median_by_tokens - 1e-9
    assert q[bottom].max() <= median_by_tokens + 1e-9
    assert not set(top) & set(bottom)


def test_random_and_random_b_are_different_samples_and_seeds_differ(pool):
    tokens, columns = pool
    a = set(arms.select(Arm("random", "random"), tokens, columns, 10_000, seed=0))
    b = set(arms.select(Arm("random_b", "random"), tokens, columns, 10_000, seed=0))
    a1 = set(arms.select(Arm("random", "random"), tokens, columns, 10_000, seed=1))
    again = set(arms.select(Arm("random", "random"), tokens, columns, 10_000, seed=0))
    assert a == again
    assert len(a & b) < 0.8 * len(a) and len(a & a1) < 0.8 * len(a)


def test_band_keeps_the_quantile_band(pool):
    tokens, columns = pool
    rows = arms.select(Arm("band", "band", "quality", band=(0.25, 0.75)), tokens, columns, 5_000, seed=0)
    low, high = np.quantile(columns["quality"], [0.25, 0.75])
    assert columns["quality"][rows].min() >= low and columns["quality"][rows].max() <= high


def test_weighted_sampling_leans_to_high_scores_and_temperature_softens_it(pool):
    tokens, columns = pool
    q = columns["quality"]
    sharp = [
        q[arms.select(Arm("w", "weighted", "quality", temperature=0.3), tokens, columns, 15_000, s)].mean()
        for s in range(5)
    ]
    soft = [
        q[arms.select(Arm("w", "weighted", "quality", temperature=5.0), tokens, columns, 15_000, s)].mean()
        for s in range(5)
    ]
    assert np.mean(sharp) > np.mean(soft) > q.mean() - 0.1
    assert np.mean(sharp) > q.mean() + 0.3


def test_stratified_arm_keeps_the_pools_length_mix_while_plain_top_does_not(pool):
    tokens, columns = pool
    bins = arms.length_bins(tokens, 4)
    pool_share = np.bincount(bins, weights=tokens) / tokens.sum()
    plain = arms.select(Arm("t", "top", "length_bias"), tokens, columns, 20_000, 0, bins=bins)
    strat = arms.select(
        Arm("t|len", "top", "length_bias", stratify=True), tokens, columns, 20_000, 0, bins=bins
    )

    def share(rows):
        return np.bincount(bins[rows], weights=tokens[rows], minlength=4) / tokens[rows].sum()

    assert np.abs(share(strat) - pool_share).max() < 0.05
    assert np.abs(share(plain) - pool_share).max() > 0.2


def test_filters_arm_takes_only_kept_rows(pool):
    tokens, columns = pool
    keep = columns["quality"] > 0
    rows = arms.select(Arm("filters", "filters"), tokens, columns, 10_000, 0, keep=keep)
    assert keep[rows].all()


def test_expression_scores_and_auto_names(pool):
    _, columns = pool
    spec = arms.build_arms({}, ["quality - 0.001 * n_tokens"], {}, {}, False, True, columns)
    assert [a.name for a in spec] == [
        "random",
        "random_b",
        "filters",
        "top(quality - 0.001 * n_tokens)",
        "bottom(quality - 0.001 * n_tokens)",
    ]
    assert [a.name for a in arms.build_arms({}, "all", {}, {}, False, False, columns)][2:] == [
        "top(length_bias)",
        "bottom(length_bias)",
        "top(quality)",
        "bottom(quality)",
    ]  # n_tokens is a size, not a score


@pytest.mark.parametrize(
    ("arm_spec", "message"),
    [
        ({"x": {"select": "best"}}, "arms.x.select=best: use one of"),
        ({"x": {"select": "top"}}, "arms.x.score: select=top needs a score"),
        ({"x": {"select": "top", "score": "nope"}}, "arms.x.score=nope: no such column 'nope' in the pool"),
        (
            {"x": {"select": "top", "score": "quality", "fraction": 1.5}},
            "arms.x.fraction=1.5: give a number in (0, 1]",
        ),
        ({"x": {"select": "band", "score": "quality", "band": [0.9, 0.1]}}, "arms.x.band=[0.9, 0.1]"),
        ({"x": {"select": "top", "score": "quality", "colour": 1}}, "arms.x: unknown keys ['colour']"),
        ({"random": {"select": "random"}}, "the name 'random' is used twice"),
    ],
)
def test_bad_arms_fail_with_one_line(pool, arm_spec, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        arms.build_arms(arm_spec, [], {}, {}, False, False, pool[1])


def test_a_budget_larger_than_an_arm_fails_before_training(pool):
    tokens, columns = pool
    with pytest.raises(ConfigError, match=r"arm 'top\(quality\)' has only \d+ tokens"):
        arms.select(
            Arm("top(quality)", "top", "quality", fraction=0.1), tokens, columns, int(tokens.sum() * 0.5), 0
        )
