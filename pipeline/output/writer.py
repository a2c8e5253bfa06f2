"""Parquet shards: deterministic names, written to a staging directory, then swapped in.

A run writes every shard of its kept rows (and, optionally, of its rejected rows) under
``<output.dir>/.litho/staging-*``. Only when all shards are written does it replace
``data/`` and ``rejected/`` by renames, so readers never see half a dataset. If the new shards
hold exactly what the current ones hold (same names and content digests), the finished shards
are kept untouched: rerunning a config rewrites nothing.

Rows go to split ``validation`` or ``train`` by a hash of their id, and to shard
``hash(id) mod n_shards``; inside a shard rows are sorted by id. The same kept rows therefore
always give byte-identical shards, whatever Ray's block layout was.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from filters.scores.token_metrics import TOKEN_IDS
from pipeline.output.packing import TOKENS, token_table
from pipeline.output.schema import typed_columns
from pipeline.output.snapshot import Snapshot, read_json
from pipeline.stages import INTERNAL_PREFIX

# Columns that only steer the pipeline; they never reach a kept shard.
INTERNAL = ("_split", "_shard", "drop_reason", "duplicate_of", "error")


def split_of(row_id: str, drop_reason: str, validation_fraction: float) -> str:
    if drop_reason:
        return "rejected"
    u = xxhash.xxh64_intdigest(row_id.encode(), seed=1) / 2**64
    return "validation" if u < validation_fraction else "train"


def shard_of(row_id: str, n_shards: int) -> int:
    return xxhash.xxh64_intdigest(row_id.encode(), seed=2) % n_shards


def split_counter(validation_fraction: float):
    """``fn(ids, reasons) -> splits``: the split of every row, for the run's aggregate (pipeline/aggregate.py)."""

    def splits(ids: list[str], reasons: list[str]) -> list[str]:
        return [split_of(str(i), str(r), validation_fraction) for i, r in zip(ids, reasons)]

    return splits


def plan_shards(counts: dict[str, int], rows_per_shard: int, write_rejected: bool) -> dict[str, int]:
    """Shards per split, from the exact row count of each split (counted inside Ray)."""
    counts = {s: n for s, n in counts.items() if n and (write_rejected or s != "rejected")}
    return {split: max(1, math.ceil(n / rows_per_shard)) for split, n in counts.items()}


def _assign(batch: dict, n_shards: dict, validation_fraction: float) -> dict:
    ids = [str(i) for i in batch["id"]]
    splits = [split_of(i, str(r), validation_fraction) for i, r in zip(ids, batch["drop_reason"])]
    keep = np.array([s in n_shards for s in splits], dtype=bool)
    batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
    batch["_split"] = np.array([s for s, k in zip(splits, keep) if k], dtype=object)
    batch["_shard"] = np.array(
        [shard_of(i, n_shards[s]) for i, s in zip(batch["id"], batch["_split"])], dtype=np.int64
    )
    return batch


def _write_group(table: pa.Table, directory: str, n_shards: dict, metadata: dict) -> pa.Table:
    split = table.column("_split")[0].as_py()
    shard = table.column("_shard")[0].as_py()
    # Kept rows lose the bookkeeping columns; rejected rows keep why they were dropped.
    drop = ("_split", "_shard") if split == "rejected" else INTERNAL
    table = table.sort_by("id")
    name = f"{split}-{shard:05d}-of-{n_shards[split]:05d}.parquet"
    if split != "rejected" and TOKEN_IDS in table.column_names:  # packing's input, beside the shard
        tokens = Path(directory) / TOKENS / name
        tokens.parent.mkdir(parents=True, exist_ok=True)
        ids = table.column("id").to_pylist()
        pq.write_table(token_table(ids, table.column(TOKEN_IDS).to_pylist()), tokens, compression="zstd")
    table = table.drop_columns([c for c in table.column_names if c in drop or c.startswith(INTERNAL_PREFIX)])
    table = typed_columns(table)  # JSON messages / layers -> Arrow lists (pipeline/output/schema.py)
    first = [c for c in ("id", "text") if c in table.column_names]
    table = table.select(first + [c for c in table.column_names if c not in first])
    table = table.replace_schema_metadata({b"litho": json.dumps(metadata).encode()})
    path = Path(directory) / ("rejected" if split == "rejected" else "data") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    digest = xxhash.xxh3_64_hexdigest(path.read_bytes())
    tokens = (
        int(pa.compute.sum(table.column("n_tokens")).as_py() or 0) if "n_tokens" in table.column_names else 0
    )
    return pa.table(
        {
            "file": [name],
            "split": [split],
            "rows": [table.num_rows],
            "tokens": [tokens],
            "bytes": [path.stat().st_size],
            "digest": [digest],
        }
    )


def write_shards(
    ds, directory: Path, n_shards: dict[str, int], metadata: dict, validation_fraction: float = 0.0
) -> list[dict]:
    """Write kept rows to ``directory/data`` and dropped rows to ``directory/rejected`` in one shuffle.

    Returns one summary dict per shard, sorted by file name.
    """
    if not n_shards:
        return []
    from pipeline.partition import map_groups, nonempty, shuffle_partitions

    ds = nonempty(ds).map_batches(
        _assign,
        fn_kwargs={"n_shards": n_shards, "validation_fraction": validation_fraction},
        batch_format="numpy",
    )
    written = map_groups(
        ds,
        ["_split", "_shard"],
        _write_group,
        shuffle_partitions(sum(n_shards.values())),
        fn_kwargs={"directory": str(directory), "n_shards": n_shards, "metadata": metadata},
        batch_format="pyarrow",
    )
    return sorted(written.take_all(), key=lambda r: r["file"])


def rows_per_shard(ds, output: dict) -> int:
    """``output.rows_per_shard``, or as many average rows as fit in ``output.max_shard_bytes``."""
    max_bytes = output.get("max_shard_bytes")
    if not max_bytes:
        return int(output["rows_per_shard"])
    rows = max(ds.count(), 1)
    # Columns kept only for packing and the dedup index are no part of a shard's size.
    extra = [c for c in ds.schema().names if c in (TOKEN_IDS, f"{INTERNAL_PREFIX}lsh_bands")]
    per_row = max((ds.drop_columns(extra) if extra else ds).size_bytes() / rows, 1.0)
    return max(1, int(max_bytes // per_row))


def same_files(previous: dict | None, shards: list[dict], rejected: list[dict], out: Path) -> bool:
    """True when the staged shards equal the published ones (names and content digests)."""
    if previous is None:
        return False

    def key(rows):
        return [(r["file"], r["digest"]) for r in rows]

    published = [(out / "data" / r["file"]) for r in previous.get("shards", [])]
    return (
        key(previous.get("shards", [])) == key(shards)
        and key(previous.get("rejected_shards", [])) == key(rejected)
        and all(p.is_file() for p in published)
    )


def publish(ds, splits: dict[str, int], out: Path, output: dict, metadata: dict) -> dict:
    """Write ``data/`` and ``rejected/`` into a staging folder and swap them in; when they equal the
    published shards, keep those untouched. ``splits`` counts the rows of each split."""
    validation = float(output.get("validation_fraction", 0.0))
    n_shards = plan_shards(splits, rows_per_shard(ds, output), bool(output.get("write_rejected", True)))
    snapshot = Snapshot(out)
    written = write_shards(ds, snapshot.staging, n_shards, metadata, validation)
    shards = [s for s in written if s["split"] != "rejected"]
    rejected = [s for s in written if s["split"] == "rejected"]
    unchanged = same_files(read_json(out / "manifest.json"), shards, rejected, out)
    snapshot.commit(("data", "rejected", str(TOKENS)), unchanged)
    return {"shards": shards, "rejected_shards": rejected, "shards_unchanged": unchanged}
