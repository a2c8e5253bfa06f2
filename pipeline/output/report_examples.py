"""The rows a run report shows in full: the extremes of each score, the typical dropped row of each
reason, duplicate clusters with one pair and its Jaccard, and their texts (read for those ids only)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.output.report_data import CATEGORIES, LAYER_GROUP, Rows, shard_files


def extremes(rows: Rows, column: str) -> list[tuple[str, str, float]]:
    """The lowest, median and highest kept rows of a score: ``(which, id, value)``."""
    kept = rows.kept & np.isfinite(rows.column(column))
    if not kept.any():
        return []
    values = rows.column(column)[kept]
    ids = rows.column("id")[kept]
    order = np.lexsort((ids.astype(str), values))
    picks = (("lowest", order[0]), ("median", order[len(order) // 2]), ("highest", order[-1]))
    return [(which, str(ids[i]), float(values[i])) for which, i in picks]


def typical_dropped(rows: Rows, columns: list[str]) -> dict[str, str]:
    """Per drop reason, the id of its most typical row: the one nearest the reason's median over the
    main scores, each scaled by its spread over all rows (ties and unscored rows: smallest id)."""
    reasons = rows.column("drop_reason")
    ids = rows.column("id").astype(str)
    main = [c for c in columns if not LAYER_GROUP.search(c)]
    matrix = np.column_stack([rows.column(c) for c in main]) if main else np.zeros((len(ids), 0))
    spread = np.nanstd(matrix, axis=0) if len(ids) else np.zeros(0)
    spread[~np.isfinite(spread) | (spread == 0)] = 1.0
    out = {}
    for reason in sorted(set(reasons.tolist()) - {""}):
        mine = np.flatnonzero(reasons == reason)
        sub = matrix[mine] / spread
        with warnings.catch_warnings():  # a score no row of this reason has (teacher errors) is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(sub, axis=0) if sub.size else sub
        distance = np.nansum((sub - centre) ** 2, axis=1) if sub.size else np.zeros(len(mine))
        order = np.lexsort((ids[mine], distance))
        out[reason] = ids[mine][order[0]]
    return out


def duplicates(rows: Rows, manifest: dict) -> dict | None:
    """Exact and near duplicates: counts, cluster sizes and one pair (duplicate id, kept id) each."""
    ran = {s["name"] for s in manifest.get("stages", [])}
    if not ran & {"exact_dedup", "near_dedup"}:
        return None
    reasons = rows.column("drop_reason")
    out = {"stages": sorted(ran & {"exact_dedup", "near_dedup"})}
    names = rows.table.column_names
    of = rows.column("duplicate_of").astype(str) if "duplicate_of" in names else np.full(len(reasons), "")
    for kind, reason in (("exact", "exact_duplicate"), ("near", "near_duplicate")):
        mine = reasons == reason
        if kind == "near" and "cluster_id" in names:
            clusters = rows.column("cluster_id").astype(str)
            sizes = Counter(clusters[clusters != ""].tolist())
        else:
            sizes = Counter(of[mine].tolist())
            sizes = Counter({k: v + 1 for k, v in sizes.items()})  # the kept row and its duplicates
        sizes = {k: v for k, v in sizes.items() if v > 1}
        entry = {"dropped": int(rows.rows_by_reason.get(reason, 0)), "clusters": len(sizes)}
        entry["sizes"] = dict(sorted(Counter(sizes.values()).items()))
        if sizes:
            biggest = max(sizes, key=lambda k: (sizes[k], k))
            member = np.flatnonzero(mine & (of == biggest))
            entry["pair"] = (str(rows.column("id")[member[0]]), biggest) if member.size else None
            entry["largest"] = sizes[biggest]
        out[kind] = entry
    return out


def pair_jaccard(text_a: str, text_b: str, ngram: int) -> float:
    """Exact Jaccard of two texts' word-shingle sets, as near dedup verifies a pair."""
    from filters.dedup.lsh import jaccard
    from filters.dedup.minhash import shingle_sets

    a, b = shingle_sets([text_a, text_b], ngram)
    return jaccard(a, b)


def texts(out: Path, ids: set[str], text_column: str) -> dict[str, dict]:
    """``{id: {text, error, drop_reason, duplicate_of, category columns}}`` for a few ids."""
    found: dict[str, dict] = {}
    if not ids:
        return found
    wanted = [text_column, "error", "drop_reason", "duplicate_of", *CATEGORIES, "topic"]
    for path in shard_files(out):
        names = pq.read_schema(path).names
        columns = ["id", *dict.fromkeys(c for c in wanted if c in names and c != "id")]
        wanted_ids = None
        # Record batches, not whole shards: the driver holds one batch of texts at a time.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=columns):
            if wanted_ids is None:
                wanted_ids = pa.array(sorted(ids), batch.column(0).type)
            for row in batch.filter(pc.is_in(batch.column(0), wanted_ids)).to_pylist():
                row["text"] = row.pop(text_column, "") or ""
                found.setdefault(str(row["id"]), row)
    return found
