"""Arms: which pool rows a student trains on, all at one token budget. Plain numpy, no Ray.

An arm says which rows are *candidates* and in what order they are taken; :func:`fill` takes rows in
that order until the budget is reached, and the stream is then cut to exactly the budget, so every
arm trains on the same number of tokens. Kinds:

* ``random`` — every row, in a random order. Always present, with ``random_b`` (another random
  sample of the same seed): their difference is the noise floor.
* ``top`` / ``bottom`` — the rows with the highest / lowest score that together hold ``fraction`` of
  the pool's tokens, sampled at random; ``score`` is a column or an expression (pipeline/expression.py).
* ``band`` — rows whose score lies inside the ``[low, high]`` quantiles of the pool (as
  ``filters.quantile_bands``), sampled at random.
* ``filters`` — rows the configured filters keep (:func:`pipeline.probe.pool.filters_mask`).
* ``weighted`` — every row, drawn without replacement with probability proportional to
  ``exp(z / temperature)``, ``z`` the standardized score (QuRating, Wettig et al., 2024: sampling
  with scores as logits beats taking only the top). Drawn with the Gumbel top-k trick.
* ``mix`` — with several named pools: random rows of each pool at a fixed share of the budget
  (``pool(real)`` is one pool alone), so "real text plus this synthetic corpus" and "real text alone"
  train on the same number of tokens (WRAP, Maini et al. 2024, mixes rephrased and real web text).

With ``max_repeats > 1`` an arm whose candidates hold fewer tokens than the budget repeats them (each
row at most that many times; DataDecide and Muennighoff et al. 2023 find up to ~4 epochs of unique
data nearly as good as new data); the default 1 never repeats.

``stratify: true`` selects within length bins (quantiles of tokens per row over the pool) and gives
each bin the budget share it has in the pool, so the arm has the pool's length distribution and a
score's effect can be told from a preference for long or short documents.
"""

from __future__ import annotations

import numpy as np
import xxhash

from filters.rules.thresholds import band_bounds
from generators.errors import ConfigError
from pipeline.probe.arm_specs import (  # noqa: F401  (the arms' definitions, used here and by callers)
    KINDS,
    NOT_SCORES,
    Arm,
    arm_from_dict,
    build_arms,
    check_mix,
    check_score,
    score_columns,
    score_values,
)
from pipeline.probe.stats import RANDOM, RANDOM_B  # noqa: F401
from pipeline.probe.student import stream  # noqa: F401  (a row list's token stream; it lives with the student)


def _candidates(arm: Arm, rows: np.ndarray, values, tokens, keep, rng) -> np.ndarray:
    """Candidate rows (a subset of ``rows``) in the order they are taken."""
    if arm.select == "random":
        return rng.permutation(rows)
    if arm.select == "filters":
        return rng.permutation(rows[keep[rows]])
    scored = rows[~np.isnan(values[rows])]
    v = values[scored]
    if arm.select in ("top", "bottom"):
        tie = rng.random(len(scored))
        order = np.lexsort((tie, -v if arm.select == "top" else v))
        ranked = scored[order]
        held = np.cumsum(tokens[ranked])
        take = int(np.searchsorted(held, arm.fraction * tokens[scored].sum())) + 1
        return rng.permutation(ranked[:take])
    if arm.select == "band":
        bounds = band_bounds(v, arm.band)
        inside = scored[(v >= bounds["min"]) & (v <= bounds["max"])] if bounds else scored[:0]
        return rng.permutation(inside)
    # weighted: Gumbel top-k = sampling without replacement with p proportional to exp(z / T)
    z = (v - v.mean()) / (v.std() or 1.0)
    keys = z / arm.temperature + rng.gumbel(size=len(v))
    return scored[np.argsort(-keys, kind="stable")]


def length_bins(tokens: np.ndarray, bins: int) -> np.ndarray:
    """Per row, its length bin (quantiles of tokens per row over the pool)."""
    edges = np.quantile(tokens, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, tokens, side="right")


def fill(order: np.ndarray, tokens: np.ndarray, budget: int) -> np.ndarray:
    """The shortest prefix of ``order`` that holds ``budget`` tokens (all of it when it holds fewer)."""
    held = np.cumsum(tokens[order])
    return order[: int(np.searchsorted(held, budget)) + 1]


def select(
    arm: Arm,
    tokens: np.ndarray,
    columns: dict[str, np.ndarray],
    budget: int,
    seed: int,
    keep: np.ndarray | None = None,
    bins: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    max_repeats: int = 1,
) -> np.ndarray:
    """The rows ``arm`` trains on for ``seed``, in training order (a row repeats only with
    ``max_repeats > 1``, when the arm's candidates hold fewer tokens than the budget).

    Args:
        tokens: Stream tokens per pool row (its tokens plus the separator).
        columns: The pool's numeric columns (scores).
        budget: Tokens to fill.
        keep: Rows the configured filters keep (for ``filters``).
        bins: Length bin per row (for stratified arms).
        labels: Pool name per row (for ``mix``).
        max_repeats: Most times a row may occur.

    Raises:
        ConfigError: the arm's candidates, repeated ``max_repeats`` times, hold fewer tokens than the budget.
    """
    # Each arm draws from its own stream of the seed: random and random_b are two different samples.
    rng = np.random.default_rng([seed, xxhash.xxh3_64_intdigest(arm.name.encode())])
    values = score_values(arm.score, columns) if arm.score else None
    everything = np.arange(len(tokens))
    if arm.select == "mix":
        parts = [(f" in pool {name}", everything[labels == name], share) for name, share in arm.shares]
    elif arm.stratify and bins is not None:
        parts = [(f" in length bin {b}", everything[bins == b], None) for b in np.unique(bins)]
    else:
        parts = [("", everything, 1.0)]
    chosen = []
    for where, rows, share in parts:
        # A stratified bin gets its pool share of the budget; a mix's pool its configured share.
        share = tokens[rows].sum() / tokens.sum() if share is None else share
        want = int(round(budget * share))
        if arm.select == "mix":
            order = rng.permutation(rows)
        else:
            order = _candidates(arm, rows, values, tokens, keep, rng)
        chosen.append(fill(_repeated(arm, order, tokens, want, max_repeats, rng, where), tokens, want))
    # A weighted draw comes out sorted by key: training order is random. Parts each fill a little past
    # their share, so the shuffled rows are cut to the budget again.
    return fill(rng.permutation(np.concatenate(chosen)), tokens, budget)


def _repeated(arm: Arm, order, tokens, budget: int, max_repeats: int, rng, where: str) -> np.ndarray:
    """``order``, followed by reshuffled copies of it when it holds fewer than ``budget`` tokens.

    Raises:
        ConfigError: even ``max_repeats`` copies hold fewer tokens than ``budget``.
    """
    held = int(tokens[order].sum())
    if held * max_repeats < budget or not len(order):
        repeated = f" even repeated {max_repeats} times" if max_repeats > 1 else ""
        raise ConfigError(
            f"budget_tokens: arm {arm.name!r} has only {held} tokens to choose from{where}{repeated}, fewer "
            f"than its budget {budget}; lower budget_tokens or widen the arm (fraction, band, max_repeats)"
        )
    copies = -(-budget // held)  # ceil: the fewest passes that hold the budget
    return np.concatenate([order] + [rng.permutation(order) for _ in range(copies - 1)])
