"""The probe's statistics: per arm and evaluation set, the mean and spread over seeds, the paired
difference against ``random`` with a 95% interval, the noise floor and the smallest detectable
difference, and a plain verdict. Plain numpy and scipy.

Seeds pair the arms: seed ``s`` gives every arm the same student initialisation and the same
block order generator, so ``bpb(arm, s) - bpb(random, s)`` removes the seed's own luck, and the
differences are tested with a paired t interval (Student's t, ``n - 1`` degrees of freedom).

``random_b`` is a second random sample at each seed: ``random_b - random`` is what two equally good
arms differ by. The *noise floor* is the largest such difference the interval allows
(``|mean| + half-width``); an arm beats random *beyond noise* only when its whole interval lies
below zero **and** its mean difference is larger than the noise floor. The *smallest detectable
difference* is the true difference a paired t test of this many seeds finds with 80% power at the
5% level, if arm-vs-random differences vary as much as random-vs-random ones:
``(t(0.975, n-1) + t(0.8, n-1)) * sd / sqrt(n)``.
"""

from __future__ import annotations

import math

import numpy as np

RANDOM, RANDOM_B = "random", "random_b"
BEATS = "beats random beyond noise"
WORSE = "worse than random beyond noise"
SAME = "no difference beyond noise"


# Student's t quantiles at 0.975 and 0.8 for 1..30 degrees of freedom, as scipy.stats.t.ppf gives them to
# 4 decimals (tests/pipeline/test_probe_stats.py checks them): the GPU runner (pipeline/probe/gpu.py) has no
# scipy. Beyond 30 it uses the normal quantiles (within 3%).
T_TABLE = {
    0.975: (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.306, 2.2622, 2.2281, 2.201, 2.1788,
            2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.093, 2.086, 2.0796, 2.0739, 2.0687, 2.0639,
            2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423),
    0.8: (1.3764, 1.0607, 0.9785, 0.941, 0.9195, 0.9057, 0.896, 0.8889, 0.8834, 0.8791, 0.8755, 0.8726,
          0.8702, 0.8681, 0.8662, 0.8647, 0.8633, 0.862, 0.861, 0.86, 0.8591, 0.8583, 0.8575, 0.8569,
          0.8562, 0.8557, 0.8551, 0.8546, 0.8542, 0.8538),
}  # fmt: skip
NORMAL = {0.975: 1.96, 0.8: 0.8416}


def t_quantile(q: float, dof: int) -> float:
    try:
        from scipy.stats import t
    except ImportError:
        table = T_TABLE[q]
        return table[dof - 1] if dof <= len(table) else NORMAL[q]
    return float(t.ppf(q, dof))


def summary(values) -> dict:
    """Mean, sample sd, n and the 95% t interval of the mean (None when n < 2)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    ci = [mean - half, mean + half] if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n, "half_width": half, "ci95": ci}


def detectable(sd: float, n: int) -> float:
    """The smallest true paired difference found with 80% power at the 5% level (two-sided)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n)


def seeds_for(sd: float, target: float, most: int = 1000) -> int | None:
    """The fewest paired seeds whose smallest detectable difference is at most ``target`` (None: more
    than ``most``, or no spread measured)."""
    if not (math.isfinite(sd) and target > 0):
        return None
    n = 2
    while detectable(sd, n) > target:
        n += 1
        if n > most:
            return None
    return n


def verdict(diff: dict, noise_floor: float) -> str:
    """Plain words for an arm's paired difference (bits/byte, lower is better) against random."""
    if diff["ci95"] is None:
        return "too few seeds to tell (seeds >= 2)"
    low, high = diff["ci95"]
    floor = noise_floor if math.isfinite(noise_floor) else 0.0
    if high < 0 and -diff["mean"] > floor:
        return BEATS
    if low > 0 and diff["mean"] > floor:
        return WORSE
    return SAME


def compare(results: list[dict], eval_set: str) -> dict:
    """Statistics of one evaluation set over ``results`` (``{"arm", "seed", "bpb": {set: value}}``).

    Returns:
        ``{"arms": {arm: {...}}, "noise": {...}}``: per arm its bits/byte summary and, for every arm
        but random, the per-seed paired differences, their summary and the verdict; ``noise`` holds
        the random-vs-random difference, the noise floor, the smallest detectable difference and
        whether random vs random shows no difference (its interval contains zero).
    """
    by_arm: dict[str, dict[int, float]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = float(r["bpb"][eval_set])
    base = by_arm[RANDOM]
    noise_diff = _paired(by_arm[RANDOM_B], base)
    noise_summary = summary(noise_diff["per_seed"])
    floor = abs(noise_summary["mean"]) + noise_summary["half_width"]
    noise = {
        "diff": {**noise_diff, **noise_summary},
        "noise_floor": floor,
        "detectable": detectable(noise_summary["sd"], noise_summary["n"]),
        "random_vs_random": _zero_inside(noise_summary),
    }
    arms = {}
    for arm, per_seed in by_arm.items():
        entry = {"bpb": {**summary(list(per_seed.values())), "per_seed": _by_seed(per_seed)}}
        if arm != RANDOM:
            diff = _paired(per_seed, base)
            diff.update(summary(diff["per_seed"]))
            entry["diff_vs_random"] = diff
            entry["verdict"] = _zero_inside(diff) if arm == RANDOM_B else verdict(diff, floor)
        arms[arm] = entry
    return {"arms": arms, "noise": noise}


def _zero_inside(diff: dict) -> str:
    if diff["ci95"] is None:
        return "too few seeds to tell (seeds >= 2)"
    low, high = diff["ci95"]
    return "no difference" if low <= 0 <= high else "differs: more seeds needed"


def _by_seed(values: dict[int, float]) -> dict[str, float]:
    return {str(s): values[s] for s in sorted(values)}


def _paired(arm: dict[int, float], base: dict[int, float]) -> dict:
    seeds = sorted(set(arm) & set(base))
    return {"seeds": seeds, "per_seed": [arm[s] - base[s] for s in seeds]}


def length_correlation(values: np.ndarray, lengths: np.ndarray) -> float:
    """Spearman rank correlation of a score with document length (tokens), NaN scores left out."""
    from scipy.stats import spearmanr

    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    if ok.sum() < 3 or np.ptp(values[ok]) == 0:
        return math.nan
    return float(spearmanr(values[ok], np.asarray(lengths)[ok]).statistic)


def paired_difference(results: list[dict], eval_set: str, arm: str, base: str) -> dict:
    """``arm - base`` paired by seed on one eval set, its summary and a verdict against the set's noise
    floor (random vs random): ``better`` / ``worse than <base> beyond noise`` or no difference."""
    compared = compare(results, eval_set)
    by_arm = {a: {s: float(v) for s, v in e["bpb"]["per_seed"].items()} for a, e in compared["arms"].items()}
    diff = _paired(by_arm[arm], by_arm[base])
    diff.update(summary(diff["per_seed"]))
    words = verdict(diff, compared["noise"]["noise_floor"])
    words = {BEATS: f"better than {base} beyond noise", WORSE: f"worse than {base} beyond noise"}.get(
        words, words if words != SAME else "no difference beyond noise"
    )
    return {**diff, "verdict": words}
