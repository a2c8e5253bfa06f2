"""The run's accounting: counts by drop reason and by stage, token totals, score summaries.

Computed per block by Ray tasks and merged in the driver (pipeline/aggregate.py): counts per drop
reason and dropping stage, per-stage seconds, and per score column count, sum, min, max and exact
p10/p50/p90; the driver holds a few KB whatever the number of rows. Which columns are scores, and their versions, come from the stage list (the specs).
"""

from __future__ import annotations

from collections import Counter
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pyarrow as pa

from pipeline.output.store import is_uri
from pipeline.stages import StageSpec


def litho_version() -> str:
    try:
        return version("litho")
    except PackageNotFoundError:
        return "0+unknown"


QUANTILES = (0.1, 0.5, 0.9)


def summarize(values: np.ndarray) -> dict:
    """The summary of the non-NaN ``values`` in one array (the report's dropped rows and samples)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"count": 0}
    stats = {"count": values.size, "sum": values.sum(), "min": values.min(), "max": values.max()}
    return summarize_aggregate(stats, np.quantile(values, QUANTILES).tolist())


def summarize_aggregate(stats: dict | None, quantiles: list[float] | None) -> dict:
    """A score's summary from its aggregate (pipeline/aggregate.py ``summary``) and exact p10/p50/p90."""
    if not stats or not stats.get("count"):
        return {"count": 0}
    q = quantiles or [float("nan")] * 3
    return {
        "count": int(stats["count"]),
        "sum": float(stats["sum"]),
        "mean": float(stats["sum"] / stats["count"]),
        "min": float(stats["min"]),
        "p10": float(q[0]),
        "p50": float(q[1]),
        "p90": float(q[2]),
        "max": float(stats["max"]),
    }


def numeric(schema: pa.Schema, names) -> list[str]:
    """The ``names`` that are integer or float columns of ``schema``, in ``names`` order."""
    types = dict(zip(schema.names, schema.types))
    return [
        n for n in names if n in types and (pa.types.is_floating(types[n]) or pa.types.is_integer(types[n]))
    ]


def stage_counts(stats: dict, specs: list[StageSpec], driver_seconds: dict) -> list[dict]:
    """Per stage, in run order: rows that reached it still kept, its drops by reason, and its seconds
    (summed inside the workers for map stages, in the driver for dataset-level stages)."""
    remaining = stats.get("rows", 0)
    out = []
    for spec in specs:
        dropped = dict(
            sorted((reason, n) for (reason, by), n in stats.get("reasons", {}).items() if by == spec.name)
        )
        seconds = stats.get("seconds", {}).get(spec.name)
        seconds = float(driver_seconds.get(spec.name, 0.0)) if seconds is None else seconds
        out.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "rows_in": remaining,
                "dropped": dropped,
                "seconds": round(seconds, 3),
                **({"version": spec.version} if spec.version else {}),
            }
        )
        remaining -= sum(dropped.values())
    return out


def build(
    job,
    stats: dict,
    quantiles: dict,
    counts: dict,
    published: dict,
    stage_seconds: dict,
    timings: dict,
    scores: list[str],
) -> dict:
    """The manifest of a finished run (``packed`` and ``card`` are added after them), from the run's
    aggregates (:func:`pipeline.aggregate.summary` and exact quantiles of its score columns).

    ``scores`` are the run's numeric score columns, in the order the manifest lists them; one without
    a kept row is ``{"count": 0}``."""
    reasons: Counter = Counter()
    for (reason, _), n in stats.get("reasons", {}).items():
        reasons[reason] += n
    aggregates = stats.get("scores", {})
    summaries = {c: summarize_aggregate(aggregates.get(c), quantiles.get(c)) for c in scores}
    rows = stats.get("rows", 0)
    kept = reasons.get("", 0)
    stored = is_uri(str(job.cfg.output.dir))  # an object store: the run worked in output.work_dir
    return {
        "litho_version": litho_version(),
        "output_dir": str(job.cfg.output.dir) if stored else str(job.out),
        **({"work_dir": str(job.out)} if stored else {}),
        "counts": {**counts, "rows_in": rows, "kept": kept, "dropped": rows - kept},
        "dropped_by_reason": {k: v for k, v in sorted(reasons.items()) if k},
        "tokens": {
            "kept_target_tokens": int(summaries.get("n_tokens", {}).get("sum", 0)),
            "teacher_completion_tokens": int(summaries.pop("completion_tokens", {}).get("sum", 0)),
        },
        "scores": summaries,
        "score_versions": job.score_versions(),
        "stages": stage_counts(stats, job.process + job.select, stage_seconds),
        **published,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
