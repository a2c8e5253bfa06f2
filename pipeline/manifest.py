"""The run's accounting: counts by drop reason, token totals, score summaries.

Computed in the driver from narrow columns (ids, reasons, numeric scores) pulled once from the
materialized dataset: 8 bytes per row per score, never the texts.
"""

from __future__ import annotations

from collections import Counter
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pyarrow as pa

# Numeric columns that describe the request or the bookkeeping, not the text's quality.
NOT_SCORES = {
    "variant",
    "prompt_tokens",
    "text_hash",
    "_shard",
    "source_row",
    "source_chunk",
    "candidate",
    "turns",
}


def litho_version() -> str:
    try:
        return version("litho")
    except PackageNotFoundError:
        return "0+unknown"


def score_columns(schema: pa.Schema) -> list[str]:
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


def account(table: pa.Table) -> tuple[dict[str, int], dict[str, dict]]:
    """Rows per drop reason ("" = kept) and summaries of every score column over the kept rows."""
    reasons = table.column("drop_reason").to_pylist()
    counts = dict(Counter(reasons))
    kept = np.asarray(reasons, dtype=object) == ""
    summaries = {
        c: summarize(table.column(c).to_numpy(zero_copy_only=False).astype(float)[kept])
        for c in score_columns(table.schema)
    }
    return counts, summaries
