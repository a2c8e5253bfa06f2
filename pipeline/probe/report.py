"""The probe's report: probe.json (every number, every run), probe.png (bits/byte per arm with 95%
intervals, one panel per evaluation set) and the summary table the command prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.output.snapshot import write_json
from pipeline.probe import power, stats
from pipeline.probe.arms import RANDOM, RANDOM_B, score_values


def _arm_profile(arm, rows: np.ndarray, tokens: np.ndarray, pool) -> dict:
    """What an arm's seed-0 rows look like: how many, how long, which groups, its score's mean."""
    held = tokens[rows]
    profile = {
        "name": arm.name,
        "select": arm.select,
        "score": arm.score,
        "fraction": arm.fraction if arm.select in ("top", "bottom") else None,
        "band": list(arm.band) if arm.band else None,
        "temperature": arm.temperature if arm.select == "weighted" else None,
        "stratify": arm.stratify,
        "docs": int(len(rows)),
        "tokens_per_doc": round(float(held.mean()), 1),
        "pool_tokens_per_doc": round(float(tokens.mean()), 1),
    }
    if arm.score:
        values = score_values(arm.score, pool.columns)
        profile["score_mean"] = _round(np.nanmean(values[rows]))
        profile["pool_score_mean"] = _round(np.nanmean(values))
    if pool.groups is not None:
        profile["group_token_share"] = group_shares(pool.groups[rows], held)
    return profile


def group_shares(groups: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """Share of the tokens per group, largest first."""
    shares = {str(g): float(tokens[groups == g].sum() / tokens.sum()) for g in np.unique(groups)}
    return {g: round(s, 3) for g, s in sorted(shares.items(), key=lambda x: -x[1])}


def _round(x, digits: int = 5):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), digits)


def build(arm_list, chosen, tokens, pool, results, budget, seeds, context) -> dict:
    """The whole report as one JSON-ready dict (statistics per evaluation set, verdict lines)."""
    scores = sorted({a.score for a in arm_list if a.score})
    correlation = {
        s: _round(stats.length_correlation(score_values(s, pool.columns), tokens), 3) for s in scores
    }
    eval_names = list(context["eval_sets"])
    per_set = {name: stats.compare(results, name) for name in eval_names}
    lines = []
    for name in eval_names:
        noise = per_set[name]["noise"]
        for arm in arm_list:
            if arm.name == RANDOM:
                continue
            entry = per_set[name]["arms"][arm.name]
            d = entry["diff_vs_random"]
            ci = "n/a" if d["ci95"] is None else f"{d['ci95'][0]:+.4f} … {d['ci95'][1]:+.4f}"
            lines.append(
                f"{name}: {arm.name}: {d['mean']:+.4f} bits/byte vs random (95% CI {ci}); {entry['verdict']} "
                f"(noise floor {noise['noise_floor']:.4f}, smallest detectable {noise['detectable']:.4f})"
            )
    winners = [
        a.name
        for a in arm_list
        if a.name not in (RANDOM, RANDOM_B)
        and all(per_set[n]["arms"][a.name]["verdict"] == stats.BEATS for n in eval_names)
    ]
    if pool.groups is not None:
        context["pool"]["group_token_share"] = group_shares(pool.groups, tokens)
    power_plans = {}
    cfg = context["config"]
    if results and "target_difference" in cfg:  # (a report of a probe from before the power plans)
        run = {
            "arms": len(arm_list),
            "parallel": context.get("parallel", 1),
            "train_s": float(np.mean([r["train_s"] for r in results])),
            "eval_s": float(np.mean([r["eval_s"] for r in results])),
            "parameters": results[0]["parameters"],
            "eval_tokens": sum(e["tokens"] for e in context["eval_sets"].values()),
            "evals": int(cfg["student"].get("average_last", 1)),
            "noise_exponent": float(cfg["power"]["noise_exponent"]),
            "gpu_flops": float(cfg["power"]["gpu_flops"]),
        }
        target = float(cfg["target_difference"])
        power_plans = {n: power.plan(per_set[n]["noise"], seeds, budget, target, run) for n in eval_names}
    return {
        "budget_tokens": budget,
        "seeds": seeds,
        **{k: v for k, v in context.items() if k != "config"},
        "student": {
            "config": context["config"]["student"],
            "parameters": results[0]["parameters"] if results else None,
            "dtype": results[0]["dtype"] if results else None,
            "device": results[0]["device"] if results else None,
        },
        "arms": [_arm_profile(a, chosen[(a.name, 0)], tokens, pool) for a in arm_list],
        "length_correlation": correlation,
        "stats": _clean(per_set),
        "power": _clean(power_plans),
        "pairs": _clean(mix_pairs(arm_list, results, eval_names)),
        "verdicts": lines,
        "beats_random_on_every_set": winners,
        "runs": sorted(results, key=lambda r: (r["arm"], r["seed"])),
        "config": context["config"],
    }


def mix_pairs(arm_list, results: list[dict], eval_names: list[str]) -> list[dict]:
    """Every mix of pools against each pool alone (``random`` is the first pool alone), paired by seed:
    is real text plus the synthetic corpus better than the real text alone, at equal tokens?"""
    pools = [a.name for a in arm_list if a.select == "mix" and len(a.shares) == 1 and a.name != RANDOM_B]
    mixes = [a.name for a in arm_list if a.select == "mix" and len(a.shares) > 1]
    out = []
    for mix in mixes:
        for alone in pools:
            for name in eval_names:
                d = stats.paired_difference(results, name, mix, alone)
                out.append({"arm": mix, "against": alone, "eval": name, **d})
    return out


def _clean(value):
    """NaN and infinities as null, so probe.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(out: Path, result: dict) -> None:
    """probe.json and probe.png in ``out``."""
    result["files"] = {"json": str(out / "probe.json"), "plot": str(out / "probe.png")}
    write_json(out / "probe.json", _clean(result))
    plot(result, out / "probe.png")


COLORS = {stats.BEATS: "tab:green", stats.WORSE: "tab:red"}


def plot(result: dict, path: Path) -> None:
    """Bits/byte per arm (mean over seeds, 95% interval), one panel per evaluation set; the grey band
    is random's mean plus or minus the noise floor; green arms beat random beyond noise, red are worse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["stats"])
    names = [a["name"] for a in result["arms"]]
    fig, axes = plt.subplots(
        1, len(sets), figsize=(4.5 * len(sets) + 2, 0.35 * len(names) + 1.6), squeeze=False
    )
    for ax, name in zip(axes[0], sets):
        per_arm = result["stats"][name]["arms"]
        means = [per_arm[n]["bpb"]["mean"] for n in names]
        halves = [per_arm[n]["bpb"]["half_width"] or 0.0 for n in names]
        colors = [COLORS.get(per_arm[n].get("verdict"), "tab:gray") for n in names]
        y = np.arange(len(names))[::-1]
        base = per_arm[RANDOM]["bpb"]["mean"]
        floor = result["stats"][name]["noise"]["noise_floor"] or 0.0
        ax.axvspan(base - floor, base + floor, color="0.9", zorder=0)
        ax.axvline(base, color="0.6", lw=0.8, zorder=1)
        for yi, m, h, c in zip(y, means, halves, colors):
            ax.errorbar(m, yi, xerr=h, fmt="o", color=c, capsize=3, zorder=2)
        ax.set_yticks(y, names if ax is axes[0][0] else [""] * len(names), fontsize=8)
        info = result["eval_sets"][name]
        ax.set_title(f"{name} ({info['docs']} docs, {info['bytes']:,} bytes)", fontsize=9)
        ax.set_xlabel("bits per byte (lower is better)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        f"student probe: {result['budget_tokens']:,} tokens per arm, {result['seeds']} seeds, 95% intervals",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title, however tall
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(result: dict) -> str:
    """The table ``litho probe`` prints: per evaluation set, every arm's bits/byte and verdict."""
    lines = []
    pool = result["pool"]
    lines.append(
        f"pool: {pool['source']}  {pool['rows']} rows, {pool['tokens']} tokens "
        f"({pool['rows_overlapping_eval']} rows overlapping eval text dropped)"
    )
    lines.append(
        f"budget: {result['budget_tokens']} tokens per arm, {result['seeds']} seeds, student "
        f"{result['student']['parameters']:,} parameters ({result['student']['dtype']}), vocab {result['vocab']['size']}"
    )
    for name, per_set in result["stats"].items():
        noise = per_set["noise"]
        lines.append("")
        lines.append(
            f"eval {name}: noise floor {_fmt(noise['noise_floor'])} bits/byte, smallest detectable "
            f"{_fmt(noise['detectable'])}; random vs random: {noise['random_vs_random']}"
        )
        if name in result.get("power", {}):
            lines.append(power.describe(result["power"][name]))
        lines.append(f"{'arm':<34}{'bits/byte':>18}  {'vs random [95% CI]':<30}verdict")
        for arm in result["arms"]:
            entry = per_set["arms"][arm["name"]]
            b = entry["bpb"]
            cell = f"{_fmt(b['mean'])} ± {_fmt(b['sd'])}"
            diff, verdict = entry.get("diff_vs_random"), entry.get("verdict", "")
            if diff:
                ci = diff["ci95"] or [None, None]
                d = f"{_fmt(diff['mean'], '+')} [{_fmt(ci[0], '+')}, {_fmt(ci[1], '+')}]"
            else:
                d = ""
            lines.append(f"{arm['name']:<34}{cell:>18}  {d:<30}{verdict}")
    if result.get("pairs"):
        lines.append("")
        lines.append(
            "mixes against each pool alone (paired by seed, bits/byte; negative = the mix is better):"
        )
        for d in result["pairs"]:
            ci = d["ci95"] or [None, None]
            lines.append(
                f"{d['eval']}: {d['arm']} - {d['against']}: {_fmt(d['mean'], '+')} "
                f"[{_fmt(ci[0], '+')}, {_fmt(ci[1], '+')}]  {d['verdict']}"
            )
    if result["length_correlation"]:
        corr = ", ".join(f"{k} {_fmt(v, '+', 2)}" for k, v in result["length_correlation"].items())
        lines.append("")
        lines.append(f"score vs length (Spearman): {corr}")
    winners = result["beats_random_on_every_set"]
    lines.append(f"beats random beyond noise on every eval set: {', '.join(winners) if winners else 'none'}")
    lines.append(
        f"report: {result['files']['json']}   plot: {result['files']['plot']}   time: {result['timings_s']['total_s']} s"
    )
    return "\n".join(lines)


def _fmt(x, sign: str = "", digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:{sign}.{digits}f}"


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
