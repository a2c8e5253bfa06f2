"""Power, stated and planned: what a probe could detect, and what it would take to detect
``target_difference`` (more paired seeds, or more tokens per arm), with the time that costs here and
on one GPU. Plain Python.

Seeds: the smallest detectable difference falls as ``(t(.975, n-1) + t(.8, n-1)) / sqrt(n)`` at the
measured spread of random-vs-random differences (:func:`pipeline.probe.stats.seeds_for`). Tokens: a
longer-trained student varies less from seed to seed; the plan assumes the spread falls as
``budget ** -noise_exponent`` (``power.noise_exponent``, measured on this machine in docs/probe.md) and
says so. Time here scales the run's own seconds per student (training in proportion to tokens, the
evaluation as it was); on one GPU it is ``6 * parameters * tokens`` training FLOPs (Kaplan et al.
2020) plus the evaluation's ``2 * parameters * tokens``, at ``power.gpu_flops`` sustained FLOP/s, an
assumption until bench/gpu_check.sh measures the GPU preset.
"""

from __future__ import annotations

import math

from pipeline.probe import stats


def plan(noise: dict, seeds: int, budget: int, target: float, run: dict) -> dict:
    """The plan for one evaluation set.

    Args:
        noise: The set's ``noise`` block from :func:`pipeline.probe.stats.compare`.
        seeds: Seeds of this run.
        budget: Tokens per arm of this run.
        target: The difference to detect (bits/byte).
        run: ``arms``, ``parallel`` (tasks at once), ``train_s`` and ``eval_s`` (mean per student),
            ``parameters``, ``eval_tokens`` (summed over the sets, per evaluation), ``evals`` (evaluations
            per student), ``noise_exponent``, ``gpu_flops``.

    Returns:
        ``detectable`` now; ``seeds`` needed at this budget; ``tokens`` per arm needed at this many
        seeds; each option's estimated hours here and on one GPU (None where not measurable).
    """
    sd = noise["diff"]["sd"] if noise.get("diff") else math.nan
    now = stats.detectable(sd, seeds)
    need_seeds = stats.seeds_for(sd, target)
    need_tokens = None
    if math.isfinite(now) and now > 0:
        need_tokens = int(math.ceil(budget * max(1.0, (now / target) ** (1 / run["noise_exponent"]))))
    out = {"target": target, "detectable": now, "seeds": need_seeds, "tokens_per_arm": need_tokens}
    out["by_seeds"] = _cost(run, need_seeds, budget, budget) if need_seeds else None
    out["by_tokens"] = _cost(run, seeds, need_tokens, budget) if need_tokens else None
    return out


def _cost(run: dict, seeds: int, tokens: int, budget: int) -> dict:
    students = run["arms"] * seeds
    here = (run["train_s"] * tokens / budget + run["eval_s"]) * students / max(1, run["parallel"])
    flops = 6 * run["parameters"] * tokens + 2 * run["parameters"] * run["eval_tokens"] * run["evals"]
    return {
        "seeds": seeds,
        "tokens_per_arm": tokens,
        "hours_here": here / 3600,
        "hours_one_gpu": flops * students / run["gpu_flops"] / 3600,
    }


def describe(p: dict) -> str:
    """One line for the summary table."""
    head = f"power: smallest detectable {_f(p['detectable'])}; to detect {p['target']:g} bits/byte: "
    options = []
    for key in ("by_seeds", "by_tokens"):
        c = p[key]
        if c:
            options.append(
                f"{c['seeds']} seeds x {c['tokens_per_arm']:,} tokens/arm (~{_h(c['hours_here'])} here, "
                f"~{_h(c['hours_one_gpu'])} on one GPU)"
            )
    if not options:
        return head + "not estimable (random vs random showed no spread; run more seeds)"
    return head + " or ".join(options)


def _f(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _h(hours: float) -> str:
    if hours * 60 < 1:
        return f"{hours * 3600:.0f} s"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"
