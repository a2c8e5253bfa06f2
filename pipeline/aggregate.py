"""Dataset-wide numbers computed inside Ray: what reaches the driver is a few KB whatever the row count.

:func:`reduce` runs a block function on every block in Ray tasks and merges the partial results in the
driver as they arrive: it holds one partial result and the merged one. On it:

* :func:`summary`: rows per ``(drop_reason, dropping stage)``, per split, sums of the per-stage
  seconds columns, and per score column the count, sum, min and max over the kept rows;
* :func:`quantiles`: exact ``np.quantile`` values (the same float as numpy on all the values) by
  radix selection: the order statistics a quantile needs are found 16 bits at a time, from
  histograms of the order-preserving 64-bit key of each value, in four passes over the narrow
  columns. A mergeable sketch would be one pass, but it is approximate, and quantile bands decide
  which rows are kept: their bounds must equal the in-memory ones, so shards stay byte-identical.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa

DIGITS = 4  # 16-bit digits of a 64-bit key
_SIGN = np.uint64(1 << 63)


def reduce(ds, block_fn: Callable[[pa.Table], dict], merge: Callable[[dict, dict], dict]) -> dict:
    """``block_fn`` on every block of ``ds`` in Ray tasks; the partial results are merged with ``merge``
    in the driver as they arrive, one at a time, so it holds one partial and the merged result.

    ``block_fn`` must return ``{}`` for an empty block, and ``merge`` treat ``{}`` as the identity.
    ``Dataset.aggregate`` would merge inside Ray too, but it runs a hash shuffle through aggregator
    actors for one group: about a second a pass on a small cluster, and the quantiles take four.
    """

    def partial(table: pa.Table) -> pa.Table:
        return pa.table({"partial": [pickle.dumps(block_fn(table))]})

    merged: dict = {}
    partials = ds.map_batches(partial, batch_format="pyarrow", batch_size=None)
    for batch in partials.iter_batches(batch_size=None, batch_format="pyarrow"):
        for value in batch.column("partial").to_pylist():
            merged = merge(merged, pickle.loads(value))
    return merged


def keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 values (NaN excluded by the caller)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def from_key(key: int) -> float:
    k = np.uint64(key)
    bits = k & ~_SIGN if k & _SIGN else ~k
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def column_values(table: pa.Table, column: str, kept: np.ndarray) -> np.ndarray:
    """Non-NaN float values of ``column`` in the rows ``kept`` (a boolean mask)."""
    if column not in table.column_names:
        return np.zeros(0)
    values = table.column(column).to_numpy(zero_copy_only=False).astype(float)[kept]
    return values[~np.isnan(values)]


def kept_mask(table: pa.Table) -> np.ndarray:
    if "drop_reason" not in table.column_names:
        return np.ones(table.num_rows, bool)
    return np.asarray(table.column("drop_reason").to_pylist(), dtype=object) == ""


def merge_dicts(a: dict, b: dict) -> dict:
    """Merge two partial results: Counters and arrays add, ``min``/``max`` keys take the extreme, dicts recurse."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = merge_dicts(out[key], value)
        elif key == "min":
            out[key] = min(out[key], value)
        elif key == "max":
            out[key] = max(out[key], value)
        else:
            out[key] = out[key] + value
    return out


def _histogram(k: np.ndarray, digit: int) -> Counter:
    shift = np.uint64(16 * (DIGITS - 1 - digit))
    found, counts = np.unique((k >> shift) & np.uint64(0xFFFF), return_counts=True)
    return Counter(dict(zip(found.tolist(), counts.tolist())))


def _under_prefix(k: np.ndarray, prefix: int, digit: int) -> np.ndarray:
    if digit == 0:
        return k
    shift = np.uint64(16 * (DIGITS - digit))
    return k[(k >> shift) == np.uint64(prefix)]


def summary(ds, scores: list[str], split_fn: Callable | None = None) -> dict:
    """One pass: ``reasons`` (Counter of ``(drop_reason, dropped_by)``), ``splits`` (Counter from
    ``split_fn(ids, reasons)``), ``seconds`` (sum per seconds column), ``rows``, and per score column
    ``count``/``sum``/``min``/``max`` over kept rows plus ``hist``, the first-digit histogram of its keys."""
    from filters.rules.base import DROPPED_BY
    from pipeline.stages import seconds_column

    def block(table: pa.Table) -> dict:
        if table.num_rows == 0:
            return {}
        reasons = table.column("drop_reason").to_pylist()
        by = table.column(DROPPED_BY).to_pylist() if DROPPED_BY in table.column_names else [""] * len(reasons)
        out = {"rows": table.num_rows, "reasons": Counter(zip(reasons, by)), "seconds": {}, "scores": {}}
        prefix = seconds_column("")
        for name in table.column_names:
            if name.startswith(prefix):
                out["seconds"][name[len(prefix) :]] = float(
                    np.nansum(table.column(name).to_numpy(zero_copy_only=False))
                )
        if split_fn is not None:
            out["splits"] = Counter(split_fn(table.column("id").to_pylist(), reasons))
        kept = kept_mask(table)
        for column in scores:
            values = column_values(table, column, kept)
            if values.size:
                out["scores"][column] = {
                    "count": int(values.size),
                    "sum": float(values.sum()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                    "hist": _histogram(keys(values), 0),
                }
        return out

    return reduce(
        ds.select_columns(_columns(ds, ["id", "drop_reason", DROPPED_BY, *scores], seconds=True)),
        block,
        merge_dicts,
    )


def _columns(ds, wanted: list[str], seconds: bool = False) -> list[str]:
    from pipeline.stages import seconds_column

    names = ds.schema().names
    prefix = seconds_column("")
    return [c for c in dict.fromkeys(wanted) if c in names] + (
        [c for c in names if c.startswith(prefix)] if seconds else []
    )


def _ranks(n: int, q: float) -> tuple[int, int, float]:
    """The two order statistics and the weight numpy's default ('linear') quantile uses for ``n`` values."""
    virtual = (n - 1) * np.float64(q)
    previous = int(np.floor(virtual))
    gamma = np.float64(virtual - np.floor(virtual))
    if virtual >= n - 1:
        return n - 1, n - 1, gamma
    return max(previous, 0), max(previous + 1, 0) if virtual >= 0 else 0, gamma


def lerp(a: float, b: float, t: np.float64) -> float:
    """numpy's quantile interpolation (``numpy.lib._function_base_impl._lerp``), on scalars."""
    a, b = np.float64(a), np.float64(b)
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


def quantiles(ds, wanted: dict[str, list[float]], stats: dict | None = None) -> dict[str, list[float]]:
    """Exact ``np.quantile(kept non-NaN values, q)`` per column and q, in four narrow passes (three
    when ``stats`` is this dataset's :func:`summary`). Columns without values are left out."""
    stats = stats if stats is not None else summary(ds, list(wanted))
    targets = []  # (column, rank) pairs still being selected: [prefix, rank within prefix]
    for column, qs in wanted.items():
        s = stats.get("scores", {}).get(column)
        if s:
            for q in qs:
                lo, hi, _ = _ranks(s["count"], q)
                targets += [(column, lo), (column, hi)]
    targets = sorted(set(targets))
    state = {}
    for column, rank in targets:
        digit, remaining = _pick(stats["scores"][column]["hist"], rank)
        state[(column, rank)] = [digit, remaining]
    narrow = ds.select_columns(_columns(ds, ["drop_reason", *wanted]))
    for digit in range(1, DIGITS):
        frozen = {t: s[0] for t, s in state.items()}

        def block(table: pa.Table, frozen=frozen, digit=digit) -> dict:
            if table.num_rows == 0:
                return {}
            kept, out = kept_mask(table), {}
            cache = {}
            for (column, rank), prefix in frozen.items():
                if column not in cache:
                    cache[column] = keys(column_values(table, column, kept))
                out[(column, rank)] = _histogram(_under_prefix(cache[column], prefix, digit), digit)
            return {"h": out}

        hists = reduce(narrow, block, merge_dicts).get("h", {})
        for t, s in state.items():
            d, s[1] = _pick(hists[t], s[1])
            s[0] = (s[0] << 16) | d
    values = {t: from_key(s[0]) for t, s in state.items()}
    out = {}
    for column, qs in wanted.items():
        s = stats.get("scores", {}).get(column)
        if s:
            results = []
            for q in qs:
                lo, hi, gamma = _ranks(s["count"], q)
                results.append(lerp(values[(column, lo)], values[(column, hi)], gamma))
            out[column] = results
    return out


def _pick(hist: Counter, rank: int) -> tuple[int, int]:
    """The digit holding the ``rank``-th (0-based) key of a histogram, and the rank inside that digit."""
    for digit in sorted(hist):
        if rank < hist[digit]:
            return digit, rank
        rank -= hist[digit]
    raise ValueError("rank beyond the histogram")
