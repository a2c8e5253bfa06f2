"""Near-duplicate removal as a Ray Data graph, plus the cross-run index writer.

The plan is described in :mod:`filters.dedup.stages`: signatures in ``map_batches``, buckets through
a ``groupby`` shuffle, component labels inside Ray from band-bucket edges only (16 bytes an edge, no
text; :func:`component_labels`), and verification plus the keep rule per group of whole components.
The driver holds counts, never edges or labels. Decisions equal
:func:`filters.dedup.lsh.near_dedup` on the same rows, whatever the number of workers or blocks.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from filters.dedup import components
from filters.dedup.index import CrossRunMatch, DedupIndex, IndexRows
from filters.dedup.lsh import id_hashes
from filters.dedup.minhash import MinHashConfig, band_matrix, bands_array
from filters.dedup.stages import (
    ClusterGroup,
    MinHashSignatures,
    assign_components,
    bucket_edges,
    explode_bands,
    part_of_label,
)
from filters.rules.base import DROPPED_BY
from pipeline.partition import map_groups, nonempty, parts_for, shuffle_partitions
from pipeline.stages import INTERNAL_PREFIX, run_task

log = logging.getLogger(__name__)
INTERNAL = ("lsh_bands", "lsh_comp", "lsh_part", "lsh_doc")
LOCAL_EDGES = 20_000_000  # candidate edges one task labels (320 MB); more go through star rounds
BANDS = f"{INTERNAL_PREFIX}lsh_bands"  # band keys kept for the cross-run index (internal: never written)
BROADCAST_DOCS = 2_000_000  # candidate docs whose labels every task reads (32 MB); more are joined


def _prepare(batch: dict) -> dict:
    """Adds ``drop_reason`` (an existing corpus has none: every row takes part), ``duplicate_of``
    and ``cluster_id`` where missing."""
    n = len(next(iter(batch.values())))
    batch.setdefault("drop_reason", np.full(n, "", dtype=object))
    batch.setdefault("duplicate_of", np.full(n, "", dtype=object))
    batch.setdefault(DROPPED_BY, np.full(n, "", dtype=object))
    batch["cluster_id"] = np.full(n, "", dtype=object)
    return batch


def _rows(batch: dict, column: str, kept: bool | None = None, component: bool | None = None) -> dict:
    """Rows with drop_reason == "" (kept=True) or not, or with / without a component."""
    if kept is not None:
        mask = (np.asarray(batch[column], dtype=object) == "") == kept
    else:
        mask = (np.asarray(batch[column]) >= 0) == component
    return {k: _select(k, v, mask) for k, v in batch.items()}


def _select(name: str, values, mask: np.ndarray):
    """``values[mask]``; band keys stay an Arrow list column (a zero-row 2-D array is not Arrow to Ray Data)."""
    if name in ("lsh_bands", BANDS):
        matrix = band_matrix(values, len(values[0]) if len(values) else 1)
        return bands_array(matrix[mask])
    return np.asarray(values)[mask]


def _finish(batch: dict, columns: list[str], id_column: str | None = None, bands: bool = False) -> dict:
    """Drop internal columns in a fixed order; ``id_column`` marks rows as their own cluster; ``bands``
    keeps the band keys as the internal ``BANDS`` column, for the cross-run index (never in a shard)."""
    if id_column is not None:
        batch["cluster_id"] = np.asarray(batch[id_column]).astype(str).astype(object)
    out = {c: batch[c] for c in columns}
    if bands:
        out[BANDS] = _select("lsh_bands", batch["lsh_bands"], np.ones(len(batch["lsh_bands"]), bool))
    return out


def near_dedup_dataset(
    ds,
    cfg,
    *,
    text_column: str = "text",
    id_column: str = "id",
    concurrency: int | None = None,
    num_cpus: float | None = None,
    local_edges: int = LOCAL_EDGES,
    broadcast_docs: int = BROADCAST_DOCS,
):
    """Mark near duplicates among rows with ``drop_reason == ""``; other rows pass untouched.

    Adds ``cluster_id`` (id of the kept row of the row's cluster; "" for rows that did not take
    part) and ``duplicate_of`` (kept or earlier-run id on removed rows; an existing column, e.g.
    from exact dedup, is kept for other rows), and sets ``drop_reason="near_duplicate"``.

    Args:
        ds: Rows with a unique ``id_column``, ``text_column`` and optionally ``drop_reason`` (string;
            a missing column means every row takes part).
        cfg: Near-dedup settings: a :class:`filters.dedup.minhash.MinHashConfig`, or a mapping of its keys
            (``conf/dedup/minhash.yaml``). With ``index_dir``, rows already in earlier runs' index
            are removed too.
        text_column: Column holding the text.
        id_column: Column holding the unique row id.
        concurrency: Most parallel tasks of the signature and clustering steps (None: Ray decides);
            ``cluster.task_concurrency`` or ``cluster.stages.near_dedup.concurrency`` in a run.
        num_cpus: Logical CPUs per task (None: Ray's default of 1).
        local_edges: Most candidate edges labelled in one task (:func:`component_labels`).
        broadcast_docs: Most candidate docs whose labels are read by every task instead of joined.
    """
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    cfg = cfg if isinstance(cfg, MinHashConfig) else MinHashConfig.from_dict(cfg)
    kw = asdict(cfg)

    # The stages build in microseconds, so they run as tasks (one instance per batch): actor pools
    # holding every CPU of a small cluster starve the shuffle tasks that feed them.
    def stage(cls: type, **extra) -> dict:
        kwargs = {"fn": cls, "kwargs": {"text_column": text_column, **extra, **kw}}
        out = {"fn_kwargs": kwargs, "batch_format": "numpy"}
        if concurrency:
            out["compute"] = TaskPoolStrategy(size=concurrency)
        if num_cpus:
            out["num_cpus"] = num_cpus
        return out

    # Signatures for every row, then one materialize: the upstream graph never runs twice.
    sig = ds.map_batches(_prepare, batch_format="numpy").map_batches(run_task, **stage(MinHashSignatures))
    if cfg.index_dir and DedupIndex(cfg).runs():
        # The index loads once per actor; one actor, so the signature tasks keep a CPU.
        sig = sig.map_batches(
            CrossRunMatch,
            fn_constructor_kwargs={"text_column": text_column, **kw},
            batch_format="numpy",
            compute=ActorPoolStrategy(size=1),
            num_cpus=0.5,
        )
    sig = sig.materialize()
    columns = [c for c in sig.schema().names if c not in INTERNAL]
    keep_bands = bool(cfg.index_dir)  # the index is written from these signatures, not new ones
    finish = {"batch_format": "numpy", "fn_kwargs": {"columns": columns, "bands": keep_bands}}
    passive = sig.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": False}, batch_format="numpy")
    passive = passive.map_batches(_finish, **finish)
    fresh = sig.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": True}, batch_format="numpy")
    fresh = nonempty(fresh)  # materialized: counted, exploded and tagged without running the filter again
    n = fresh.count()
    if n == 0:
        return passive

    parts = max(1, math.ceil(n * cfg.bands / 1_000_000))  # ~1M band rows (~24 MB) per bucket group
    light = {k: v for k, v in stage(ClusterGroup).items() if k in ("compute", "num_cpus")}
    bands = fresh.map_batches(
        explode_bands, fn_kwargs={"id_column": id_column, "num_parts": parts, **kw}, batch_format="numpy"
    )
    edges = map_groups(bands, "lsh_part", bucket_edges, shuffle_partitions(parts), **light)
    edges = nonempty(edges)
    labels = component_labels(edges, local_edges)
    docs = labels.count()
    log.info("near dedup: %d rows, %d bucket edges, %d rows in candidate components", n, edges.count(), docs)

    singles_kw = {"columns": columns, "id_column": id_column, "bands": keep_bands}
    if not docs:
        singles = fresh.map_batches(_finish, fn_kwargs=singles_kw, batch_format="numpy")
        return passive.union(singles)
    cluster_parts = max(1, math.ceil(docs / 20_000))  # ~20k texts per clustering group
    if docs <= broadcast_docs:
        # Few candidates: every task reads the labels (16 bytes a candidate) from the object store.
        refs = labels.to_arrow_refs()
        tagged = fresh.map_batches(
            _assign_from_refs,
            fn_kwargs={"refs": refs, "id_column": id_column, "num_parts": cluster_parts},
            batch_format="numpy",
        )
    else:  # many: a hash join on the id hash, so no task holds every label
        keyed = fresh.map_batches(_with_doc, fn_kwargs={"id_column": id_column}, batch_format="numpy")
        tagged = keyed.join(labels, "left_outer", num_partitions=parts_for(labels), on=("lsh_doc",))
        tagged = tagged.map_batches(
            part_of_label, fn_kwargs={"num_parts": cluster_parts}, batch_format="pyarrow"
        )
    singles = tagged.map_batches(
        _rows, fn_kwargs={"column": "lsh_part", "component": False}, batch_format="numpy"
    )
    clustered = map_groups(
        tagged.map_batches(_rows, fn_kwargs={"column": "lsh_part", "component": True}, batch_format="numpy"),
        "lsh_part",
        run_task,
        shuffle_partitions(cluster_parts),
        **stage(ClusterGroup, id_column=id_column),
    )
    return passive.union(
        singles.map_batches(_finish, fn_kwargs=singles_kw, batch_format="numpy"),
        clustered.map_batches(_finish, **finish),
    )


def component_labels(edges, local_edges: int = LOCAL_EDGES):
    """Dataset ``(lsh_doc, lsh_comp)``: the component (smallest doc hash) of every doc with an edge.

    Up to ``local_edges`` edges, one Ray task labels them (16 bytes an edge, as datatrove's single
    clustering task does); beyond, large-star / small-star rounds over hash partitions of nodes
    (:mod:`filters.dedup.components`) run until a round leaves the edge multiset unchanged, so no
    process ever holds all edges. The driver sees counts and digests only.
    """
    import ray

    from pipeline import aggregate
    from pipeline.partition import partition_map, parts_for

    n_edges = edges.count()
    if n_edges == 0:
        return ray.data.from_arrow(
            pa.table({"lsh_doc": pa.array([], pa.uint64()), "lsh_comp": pa.array([], pa.uint64())})
        )
    if n_edges <= local_edges:
        task = ray.remote(num_cpus=0.25)(_local_labels)
        return ray.data.from_arrow_refs([task.remote(*edges.to_arrow_refs())])
    parts = parts_for(edges)
    current = edges.select_columns([components.A, components.B])
    seen = None
    while True:
        current = partition_map(
            current.map_batches(components.both_ways, batch_format="numpy"),
            components.A,
            components.large_star,
            parts,
        )
        current = partition_map(
            current.map_batches(components.both_ways, batch_format="numpy"),
            components.A,
            components.small_star,
            parts,
        ).materialize()
        digest = aggregate.reduce(
            current, lambda t: components.edge_digest(t.to_pydict()) if t.num_rows else {}, _add_digest
        )
        if digest == seen:
            break
        seen = digest
    pairs = current.map_batches(components.star_pairs, batch_format="numpy")
    return partition_map(pairs, "lsh_doc", components.first_label, parts).materialize()


def _add_digest(a: dict, b: dict) -> dict:
    if not a or not b:
        return a or b
    return {"edges": a["edges"] + b["edges"], "digest": (a["digest"] + b["digest"]) % 2**64}


def _local_labels(*tables: pa.Table) -> pa.Table:
    # Empty blocks may come without columns.
    tables = [t.select([components.A, components.B]) for t in tables if t.num_rows]
    a = np.concatenate(
        [np.zeros(0, np.uint64)] + [t.column(components.A).to_numpy().astype(np.uint64) for t in tables]
    )
    b = np.concatenate(
        [np.zeros(0, np.uint64)] + [t.column(components.B).to_numpy().astype(np.uint64) for t in tables]
    )
    return pa.table(components.local_components(a, b))


_LABELS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _assign_from_refs(batch: dict, refs: list, id_column: str, num_parts: int) -> dict:
    """``assign_components`` with the labels read once per worker from the object store."""
    import ray

    key = tuple(r.hex() for r in refs)
    if key not in _LABELS:
        _LABELS.clear()
        table = pa.concat_tables(ray.get(list(refs)))
        order = np.argsort(table.column("lsh_doc").to_numpy())
        _LABELS[key] = (
            table.column("lsh_doc").to_numpy()[order].astype(np.uint64),
            table.column("lsh_comp").to_numpy()[order].astype(np.uint64),
        )
    docs, comps = _LABELS[key]
    return assign_components(batch, docs, comps, id_column=id_column, num_parts=num_parts)


def _with_doc(batch: dict, id_column: str) -> dict:
    batch["lsh_doc"] = id_hashes(np.asarray(batch[id_column], dtype=object))
    return batch


def write_dedup_index(ds, cfg, run_id: str, *, text_column: str = "text", id_column: str = "id") -> Path:
    """Add a finished run's kept rows (``drop_reason == ""``) to ``cfg.index_dir``; returns the
    committed run directory. Call it after the run's shards are written, so an interrupted run
    leaves the index as it was. Band keys come from the run's own signatures (``BANDS``) when the rows
    carry them."""
    cfg = cfg if isinstance(cfg, MinHashConfig) else MinHashConfig.from_dict(cfg)
    index = DedupIndex(cfg)
    staging = index.staging_dir(run_id)
    kept = ds.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": True}, batch_format="numpy")
    kept.map_batches(
        run_task,
        fn_kwargs={
            "fn": IndexRows,
            "kwargs": {
                "text_column": text_column,
                "id_column": id_column,
                "bands_column": BANDS,
                **asdict(cfg),
            },
        },
    ).write_parquet(str(staging))
    return index.commit(run_id)


def index_run_id(output_dir: str) -> str:
    """The cross-run dedup index entry of an output directory (one per directory; a URI as it is)."""
    place = str(output_dir) if "://" in str(output_dir) else str(Path(output_dir).expanduser().resolve())
    return xxhash.xxh3_64_hexdigest(place.encode())


def near_dedup_stage(ds, minhash: dict, output_dir: str, text_column: str = "text", **resources):
    """The dataset-level stage of a run (pipeline/process.py): a rerun into the same output directory
    must not find its own texts in the cross-run index, so that entry is cleared first."""
    if minhash.get("index_dir"):
        shutil.rmtree(Path(minhash["index_dir"]) / f"run={index_run_id(output_dir)}", ignore_errors=True)
    return near_dedup_dataset(ds, minhash, text_column=text_column, **resources)
