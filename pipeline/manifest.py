"""The run's accounting: counts by stage and drop reason, token totals, score summaries."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import numpy as np

# Numeric columns that describe the request or the bookkeeping, not the text's quality.
NOT_SCORES = {"variant", "prompt_tokens", "text_hash", "_shard"}


def litho_version() -> str:
    try:
        return version("litho")
    except PackageNotFoundError:
        return "0+unknown"


def drop_counts(ds) -> dict[str, int]:
    """Rows per drop reason ("" = kept) with one groupby."""
    rows = ds.groupby("drop_reason").count().take_all()
    return {r["drop_reason"]: int(r["count()"]) for r in rows}


def score_columns(schema) -> list[str]:
    import pyarrow as pa

    return [
        name
        for name, dtype in zip(schema.names, schema.types)
        if name not in NOT_SCORES and (pa.types.is_floating(dtype) or pa.types.is_integer(dtype))
    ]


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


def score_summaries(kept) -> dict[str, dict]:
    """Summary statistics of every score column over the kept rows.

    Only the numeric score columns travel to the driver (8 bytes per row per score).
    """
    columns = score_columns(kept.schema().base_schema) if kept.count() else []
    if not columns:
        return {}
    table = kept.select_columns(columns).to_arrow_refs()
    import pyarrow as pa
    import ray

    merged = pa.concat_tables(ray.get(table))
    return {c: summarize(merged.column(c).to_numpy(zero_copy_only=False).astype(float)) for c in columns}
