"""Arms as the probe's config names them: every kind's checked settings (:class:`Arm`) and the list
of one probe's arms (:func:`build_arms`); which rows each arm takes is :mod:`pipeline.probe.arms`."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from filters.rules.thresholds import check_bands
from generators.errors import ConfigError
from pipeline import expression
from pipeline.probe.stats import RANDOM, RANDOM_B  # the two random arms every probe has

KINDS = ("random", "top", "bottom", "band", "filters", "weighted", "mix")
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
        shares: ``((pool, share), ...)`` for ``mix``: each pool's share of the budget.
    """

    name: str
    select: str
    score: str | None = None
    fraction: float = 0.5
    band: tuple[float, float] | None = None
    temperature: float = 1.0
    stratify: bool = False
    shares: tuple[tuple[str, float], ...] | None = None


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


def check_mix(mix, pools: list[str]) -> tuple[tuple[str, float], ...]:
    """A mix's ``((pool, share), ...)``: named pools, shares in (0, 1] that add up to 1.

    Raises:
        ConfigError: no pools to mix, an unknown pool name, or shares that are not a split of 1.
    """
    if len(pools) < 2:
        raise ConfigError(f"mix={mix}: needs pools={{name: pool, ...}} with two or more pools to mix")
    if not isinstance(mix, dict) or not mix:
        raise ConfigError(f"mix={mix}: give pool shares, e.g. {{{pools[0]}: 0.5, {pools[1]}: 0.5}}")
    unknown = sorted(set(map(str, mix)) - set(pools))
    if unknown:
        raise ConfigError(f"mix.{unknown[0]}: no such pool; the pools are {pools}")
    shares = tuple((str(n), _number(v, f"mix.{n}", 0, 1)) for n, v in mix.items())
    if abs(sum(v for _, v in shares) - 1) > 1e-6:
        raise ConfigError(
            f"mix={mix}: the shares add up to {sum(v for _, v in shares):g}; make them add up to 1"
        )
    return shares


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
    arms: dict,
    halves,
    bands: dict,
    weighted: dict,
    stratified: bool,
    with_filters: bool,
    columns: dict,
    middle=None,
    pools: list[str] | None = None,
    mixes=None,
) -> list[Arm]:
    """Every arm of a probe: ``random``, ``random_b`` (with ``pools``: random rows of the first pool),
    one ``pool(name)`` per further pool and the ``mixes`` of them, the configured filters (when asked), the named ``arms``, top and bottom halves
    of each score in ``halves`` (``all``: every score column) and, with ``middle`` (``[0.25, 0.75]``),
    its middle quantile band, the quantile ``bands``, the ``weighted`` samplings, and with
    ``stratified`` a length-stratified twin of every score arm.

    Raises:
        ConfigError: a bad arm or mix, or two arms with one name.
    """
    out = [Arm(RANDOM, "random"), Arm(RANDOM_B, "random")]
    if len(pools or []) > 1:
        # With several pools the two random arms sample the first one, the reference (real text, say):
        # the noise floor is that pool's, not that of a union whose make-up itself varies from draw to draw.
        out = [Arm(name, "mix", shares=((pools[0], 1.0),)) for name in (RANDOM, RANDOM_B)]
        out += [Arm(f"pool({name})", "mix", shares=((name, 1.0),)) for name in pools[1:]]
    for mix in [mixes] if isinstance(mixes, dict) else list(mixes or []):
        shares = check_mix(mix, pools or [])
        out.append(Arm("mix(" + ",".join(f"{n}={s:g}" for n, s in shares) + ")", "mix", shares=shares))
    if with_filters:
        out.append(Arm("filters", "filters"))
    for name, spec in (arms or {}).items():
        out.append(arm_from_dict(str(name), spec, columns))
    if halves == "all":
        halves = score_columns(columns)
    if isinstance(halves, str) or not isinstance(halves, list | tuple):
        raise ConfigError(f"halves={halves}: give a list of score columns or expressions, or all")
    if middle is not None:
        middle = tuple(check_bands({"middle_band": middle}, "probe")["middle_band"])
    for score in halves:
        for side in ("top", "bottom"):
            spec = {"select": side, "score": score}
            out.append(arm_from_dict(f"{side}({score})", spec, columns, key="halves"))
        if middle is not None:
            spec = {"select": "band", "score": score, "band": list(middle)}
            out.append(
                arm_from_dict(f"band({score},{middle[0]:g}-{middle[1]:g})", spec, columns, key="halves")
            )
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
