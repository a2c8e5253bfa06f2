"""Near-duplicate removal as a Ray Data graph, plus the cross-run index writer.

The plan is described in :mod:`filters.dedup.stages`: signatures in ``map_batches``, buckets through
a ``groupby`` shuffle, component labels in the driver from band-bucket edges only (16 bytes an edge,
no text), and verification plus the keep rule per group of whole components. Decisions equal
:func:`filters.dedup.lsh.near_dedup` on the same rows, whatever the number of workers or blocks.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import xxhash

from filters.dedup.index import CrossRunMatch, DedupIndex, IndexRows
from filters.dedup.minhash import MinHashConfig
from filters.dedup.stages import (
    ClusterGroup,
    MinHashSignatures,
    assign_components,
    bucket_edges,
    components,
    explode_bands,
)
from filters.rules.base import DROPPED_BY
from pipeline.stages import run_task

log = logging.getLogger(__name__)
INTERNAL = ("lsh_bands", "lsh_comp", "lsh_part")


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
    return {k: np.asarray(v)[mask] for k, v in batch.items()}


def _finish(batch: dict, columns: list[str], id_column: str | None = None) -> dict:
    """Drop internal columns in a fixed order; ``id_column`` marks rows as their own cluster."""
    if id_column is not None:
        batch["cluster_id"] = np.asarray(batch[id_column]).astype(str).astype(object)
    return {c: batch[c] for c in columns}


def near_dedup_dataset(
    ds,
    cfg,
    *,
    text_column: str = "text",
    id_column: str = "id",
    concurrency: int | None = None,
    num_cpus: float | None = None,
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
    finish = {"batch_format": "numpy", "fn_kwargs": {"columns": columns}}
    passive = sig.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": False}, batch_format="numpy")
    passive = passive.map_batches(_finish, **finish)
    fresh = sig.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": True}, batch_format="numpy")
    n = fresh.count()
    if n == 0:
        return passive

    parts = max(1, math.ceil(n * cfg.bands / 1_000_000))  # ~1M band rows (~24 MB) per bucket group
    edges = (
        fresh.map_batches(
            explode_bands, fn_kwargs={"id_column": id_column, "num_parts": parts, **kw}, batch_format="numpy"
        )
        .groupby("lsh_part")
        .map_groups(bucket_edges, batch_format="numpy")
    )
    a, b = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
    for batch in edges.iter_batches(batch_format="numpy", batch_size=None):
        a.append(batch["lsh_a"])
        b.append(batch["lsh_b"])
    docs, comps = components(np.concatenate(a), np.concatenate(b))
    log.info(
        "near dedup: %d rows, %d bucket edges, %d rows in %d candidate components",
        n,
        sum(map(len, a)),
        len(docs),
        len(np.unique(comps)),
    )

    singles_kw = {"columns": columns, "id_column": id_column}
    if not len(docs):
        singles = fresh.map_batches(_finish, fn_kwargs=singles_kw, batch_format="numpy")
        return passive.union(singles)
    cluster_parts = max(1, math.ceil(len(docs) / 20_000))  # ~20k texts per clustering group
    tagged = fresh.map_batches(
        assign_components,
        fn_kwargs={"docs": docs, "comps": comps, "id_column": id_column, "num_parts": cluster_parts},
        batch_format="numpy",
    )
    singles = tagged.map_batches(
        _rows, fn_kwargs={"column": "lsh_comp", "component": False}, batch_format="numpy"
    )
    clustered = (
        tagged.map_batches(_rows, fn_kwargs={"column": "lsh_comp", "component": True}, batch_format="numpy")
        .groupby("lsh_part")
        .map_groups(run_task, **stage(ClusterGroup, id_column=id_column))
    )
    return passive.union(
        singles.map_batches(
            _finish, fn_kwargs={"columns": columns, "id_column": id_column}, batch_format="numpy"
        ),
        clustered.map_batches(_finish, **finish),
    )


def write_dedup_index(ds, cfg, run_id: str, *, text_column: str = "text", id_column: str = "id") -> Path:
    """Add a finished run's kept rows (``drop_reason == ""``) to ``cfg.index_dir``; returns the
    committed run directory. Call it after the run's shards are written, so an interrupted run
    leaves the index as it was."""
    cfg = cfg if isinstance(cfg, MinHashConfig) else MinHashConfig.from_dict(cfg)
    index = DedupIndex(cfg)
    staging = index.staging_dir(run_id)
    kept = ds.map_batches(_rows, fn_kwargs={"column": "drop_reason", "kept": True}, batch_format="numpy")
    kept.map_batches(
        run_task,
        fn_kwargs={
            "fn": IndexRows,
            "kwargs": {"text_column": text_column, "id_column": id_column, **asdict(cfg)},
        },
    ).write_parquet(str(staging))
    return index.commit(run_id)


def index_run_id(output_dir: str) -> str:
    """The cross-run dedup index entry of an output directory (one per directory)."""
    return xxhash.xxh3_64_hexdigest(str(Path(output_dir).expanduser().resolve()).encode())


def near_dedup_stage(ds, minhash: dict, output_dir: str, text_column: str = "text", **resources):
    """The dataset-level stage of a run (pipeline/process.py): a rerun into the same output directory
    must not find its own texts in the cross-run index, so that entry is cleared first."""
    if minhash.get("index_dir"):
        shutil.rmtree(Path(minhash["index_dir"]) / f"run={index_run_id(output_dir)}", ignore_errors=True)
    return near_dedup_dataset(ds, minhash, text_column=text_column, **resources)
