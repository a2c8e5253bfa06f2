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

``stratify: true`` selects within length bins (quantiles of tokens per row over the pool) and gives
each bin the budget share it has in the pool, so the arm has the pool's length distribution and a
score's effect can be told from a preference for long or short documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

from filters.rules.thresholds import band_bounds
from generators.errors import ConfigError
from pipeline import expression

KINDS = ("random", "top", "bottom", "band", "filters", "weighted")
RANDOM, RANDOM_B = "random", "random_b"
# Numeric pool columns that are sizes, counters or ids, not scores (``halves: all`` skips them).
NOT_SCORES = {
    "source_row",
    "variant",
    "n_tokens",
    "n_chars",
    "n_bytes",
    "n_words",
    "prompt_tokens",
    "completion_tokens",
    "text_hash",
    "source_chunk",
    "n_turns",
}
LAYER_GROUP = re.compile(r"_g\d+$")


@dataclass(frozen=True)
class Arm:
    """One arm.

    Args:
        name: Unique name (tables, probe.json, the plot).
        select: One of :data:`KINDS`.
        score: Score column or expression (``top``, ``bottom``, ``band``, ``weighted``).
        fraction: Share of the pool's tokens that ``top``/``bottom`` take their sample from.
        band: ``(low, high)`` quantiles for ``band``.
        temperature: Softness of ``weighted`` (larger: closer to random).
        stratify: Select within length bins.
    """

    name: str
    select: str
    score: str | None = None
    fraction: float = 0.5
    band: tuple[float, float] | None = None
    temperature: float = 1.0
    stratify: bool = False


def score_columns(columns: dict[str, np.ndarray]) -> list[str]:
    """The pool's score columns: numeric, not a size or id, not a per-layer-group variant."""
    return sorted(
        c
        for c, v in columns.items()
        if np.issubdtype(np.asarray(v).dtype, np.number)
        and c not in NOT_SCORES
        and not c.startswith("_")
        and not LAYER_GROUP.search(c)
    )


def _number(value, key: str, low: float, high: float, low_open: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        raise ConfigError(f"{key}={value}: give a number in {'(' if low_open else '['}{low}, {high}]")
    return float(value)


def arm_from_dict(name: str, spec: dict, columns: dict[str, np.ndarray], key: str | None = None) -> Arm:
    """An arm from its config block, every value checked; ``key`` names it in errors (default ``arms.NAME``).

    Raises:
        ConfigError: an unknown kind or key, a missing or unknown score, a bad number.
    """
    score_key = key or f"arms.{name}.score"
    key = key or f"arms.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}={spec}: give a mapping, e.g. {{select: top, score: chars_per_token}}")
    extra = sorted(set(spec) - {"select", "score", "fraction", "band", "temperature", "stratify"})
    if extra:
        raise ConfigError(
            f"{key}: unknown keys {extra}; use select, score, fraction, band, temperature, stratify"
        )
    select = spec.get("select")
    if select not in KINDS:
        raise ConfigError(f"{key}.select={select}: use one of {list(KINDS)}")
    score = spec.get("score")
    if select in ("top", "bottom", "band", "weighted"):
        if not score:
            raise ConfigError(f"{score_key}: select={select} needs a score column or expression")
        check_score(str(score), score_key, columns)
    band = spec.get("band")
    if select == "band":
        ok = isinstance(band, list | tuple) and len(band) == 2
        ok = ok and all(isinstance(q, int | float) and not isinstance(q, bool) for q in band)
        if not ok or not 0 <= band[0] < band[1] <= 1:
            raise ConfigError(f"{key}.band={band}: give two quantiles [low, high] with 0 <= low < high <= 1")
        band = (float(band[0]), float(band[1]))
    return Arm(
        name=name,
        select=select,
        score=str(score) if score else None,
        fraction=_number(spec.get("fraction", 0.5), f"{key}.fraction", 0, 1),
        band=band if select == "band" else None,
        temperature=_number(spec.get("temperature", 1.0), f"{key}.temperature", 0, 1e9),
        stratify=bool(spec.get("stratify", False)),
    )


def check_score(score: str, key: str, columns: dict[str, np.ndarray]) -> None:
    """A score column or expression over the pool's numeric columns.

    Raises:
        ConfigError: not an expression, or a column the pool lacks (the message lists its scores).
    """
    missing = [c for c in expression.columns(score, key) if c not in columns]
    if missing:
        raise ConfigError(
            f"{key}={score}: no such column {missing[0]!r} in the pool; its score columns are "
            f"{score_columns(columns)}"
        )


def score_values(score: str, columns: dict[str, np.ndarray]) -> np.ndarray:
    return expression.evaluate(score, {c: columns[c] for c in expression.columns(score)}, key=score)


def build_arms(
    arms: dict, halves, bands: dict, weighted: dict, stratified: bool, with_filters: bool, columns: dict
) -> list[Arm]:
    """Every arm of a probe: ``random``, ``random_b``, the configured filters (when asked), the named
    ``arms``, top and bottom halves of each score in ``halves`` (``all``: every score column), the
    quantile ``bands``, the ``weighted`` samplings, and with ``stratified`` a length-stratified twin of
    every score arm.

    Raises:
        ConfigError: a bad arm, or two arms with one name.
    """
    out = [Arm(RANDOM, "random"), Arm(RANDOM_B, "random")]
    if with_filters:
        out.append(Arm("filters", "filters"))
    for name, spec in (arms or {}).items():
        out.append(arm_from_dict(str(name), spec, columns))
    if halves == "all":
        halves = score_columns(columns)
    if isinstance(halves, str) or not isinstance(halves, list | tuple):
        raise ConfigError(f"halves={halves}: give a list of score columns or expressions, or all")
    for score in halves:
        for side in ("top", "bottom"):
            spec = {"select": side, "score": score}
            out.append(arm_from_dict(f"{side}({score})", spec, columns, key="halves"))
    for score, band in (bands or {}).items():
        name = f"band({score},{band[0]:g}-{band[1]:g})" if isinstance(band, list | tuple) else str(score)
        spec = {"select": "band", "score": score, "band": band}
        out.append(arm_from_dict(name, spec, columns, key="bands"))
    for score, temperature in (weighted or {}).items():
        spec = {"select": "weighted", "score": score, "temperature": temperature}
        out.append(arm_from_dict(f"weighted({score},T={temperature})", spec, columns, key="weighted"))
    if stratified:
        twins = [a for a in out if a.score and not a.stratify]
        out += [Arm(**{**a.__dict__, "name": f"{a.name}|len", "stratify": True}) for a in twins]
    names = [a.name for a in out]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"arms: the name {doubled[0]!r} is used twice; rename one arm")
    return out


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
) -> np.ndarray:
    """The rows ``arm`` trains on for ``seed``, in training order.

    Args:
        tokens: Stream tokens per pool row (its tokens plus the separator).
        columns: The pool's numeric columns (scores).
        budget: Tokens to fill.
        keep: Rows the configured filters keep (for ``filters``).
        bins: Length bin per row (for stratified arms).

    Raises:
        ConfigError: the arm's candidates hold fewer tokens than the budget.
    """
    # Each arm draws from its own stream of the seed: random and random_b are two different samples.
    rng = np.random.default_rng([seed, xxhash.xxh3_64_intdigest(arm.name.encode())])
    values = score_values(arm.score, columns) if arm.score else None
    everything = np.arange(len(tokens))
    if arm.stratify and bins is not None:
        chosen = []
        total = tokens.sum()
        for b in np.unique(bins):
            rows = everything[bins == b]
            share = int(round(budget * tokens[rows].sum() / total))
            order = _candidates(arm, rows, values, tokens, keep, rng)
            _check_capacity(arm, tokens[order].sum(), share, f" in length bin {b}")
            chosen.append(fill(order, tokens, share))
        picked = np.concatenate(chosen)
    else:
        order = _candidates(arm, everything, values, tokens, keep, rng)
        _check_capacity(arm, tokens[order].sum(), budget, "")
        picked = fill(order, tokens, budget)
    # A weighted draw comes out sorted by key: training order is random. Stratified bins each fill a
    # little past their share, so the shuffled rows are cut to the budget again.
    return fill(rng.permutation(picked), tokens, budget)


def _check_capacity(arm: Arm, held: int, budget: int, where: str) -> None:
    if held < budget:
        raise ConfigError(
            f"budget_tokens: arm {arm.name!r} has only {int(held)} tokens to choose from{where}, fewer than "
            f"its budget {budget}; lower budget_tokens or widen the arm (fraction, band)"
        )


def stream(
    rows: np.ndarray, flat: np.ndarray, offsets: np.ndarray, budget: int, separator: int
) -> np.ndarray:
    """The training stream of ``rows``: each row's tokens led by the separator, cut to ``budget``."""
    pieces = []
    for r in rows:
        pieces.append([separator])
        pieces.append(flat[offsets[r] : offsets[r + 1]])
    return np.concatenate(pieces).astype(np.int32)[:budget]
