"""The run's accounting: counts by drop reason and by stage, token totals, score summaries.

Computed in the driver from narrow columns (ids, reasons, the dropping stage, per-stage seconds and
numeric scores) pulled once from the materialized dataset: a few bytes per row per column, never
the texts. Which columns are scores, and their versions, come from the stage list (the specs).
"""

from __future__ import annotations

from collections import Counter
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pyarrow as pa

from filters.rules.base import DROPPED_BY
from pipeline.stages import StageSpec, seconds_column


def litho_version() -> str:
    try:
        return version("litho")
    except PackageNotFoundError:
        return "0+unknown"


def summarize(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"count": 0}
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "count": int(values.size),
        "sum": float(values.sum()),
        "mean": float(values.mean()),
        "min": float(values.min()),
        "p10": float(q[0]),
        "p50": float(q[1]),
        "p90": float(q[2]),
        "max": float(values.max()),
    }


def numeric(schema: pa.Schema, names) -> list[str]:
    """The ``names`` that are integer or float columns of ``schema``, in ``names`` order."""
    types = dict(zip(schema.names, schema.types))
    return [
        n for n in names if n in types and (pa.types.is_floating(types[n]) or pa.types.is_integer(types[n]))
    ]


def account(table: pa.Table, scores: list[str]) -> tuple[dict[str, int], dict[str, dict]]:
    """Rows per drop reason ("" = kept) and summaries of the ``scores`` columns over the kept rows."""
    reasons = table.column("drop_reason").to_pylist()
    counts = dict(Counter(reasons))
    kept = np.asarray(reasons, dtype=object) == ""
    summaries = {
        c: summarize(table.column(c).to_numpy(zero_copy_only=False).astype(float)[kept])
        for c in scores
        if c in table.column_names
    }
    return counts, summaries


def stage_counts(table: pa.Table, specs: list[StageSpec], driver_seconds: dict) -> list[dict]:
    """Per stage, in run order: rows that reached it still kept, its drops by reason, and its seconds
    (summed inside the workers for map stages, in the driver for dataset-level stages)."""
    reasons = np.asarray(table.column("drop_reason").to_pylist(), dtype=object)
    by = (
        np.asarray(table.column(DROPPED_BY).to_pylist(), dtype=object)
        if DROPPED_BY in table.column_names
        else np.full(len(reasons), "", dtype=object)
    )
    remaining = table.num_rows
    out = []
    for spec in specs:
        mine = by == spec.name
        dropped = dict(sorted(Counter(reasons[mine].tolist()).items()))
        column = seconds_column(spec.name)
        if column in table.column_names:
            seconds = float(np.nansum(table.column(column).to_numpy(zero_copy_only=False)))
        else:
            seconds = float(driver_seconds.get(spec.name, 0.0))
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
        remaining -= int(mine.sum())
    return out


def build(job, table: pa.Table, counts: dict, published: dict, stage_seconds: dict, timings: dict) -> dict:
    """The manifest of a finished run (``packed`` and ``card`` are added after them)."""
    scores = numeric(table.schema, job.score_columns())
    reasons, summaries = account(table, scores)
    kept = reasons.get("", 0)
    return {
        "litho_version": litho_version(),
        "output_dir": str(job.out),
        "counts": {**counts, "rows_in": table.num_rows, "kept": kept, "dropped": table.num_rows - kept},
        "dropped_by_reason": {k: v for k, v in sorted(reasons.items()) if k},
        "tokens": {
            "kept_target_tokens": int(summaries.get("n_tokens", {}).get("sum", 0)),
            "teacher_completion_tokens": int(summaries.pop("completion_tokens", {}).get("sum", 0)),
        },
        "scores": summaries,
        "score_versions": job.score_versions(),
        "stages": stage_counts(table, job.process + job.select, stage_seconds),
        **published,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
