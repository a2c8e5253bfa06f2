"""The Ray Data graph: generate → clean → score → filter → dedup, as lazy datasets.

Generation is its own phase because its results are checkpointed (see pipeline/checkpoint.py):
the post-generation graph always reads the checkpoints, so a first run and a resumed run go
through exactly the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from filters.clean import Cleaner
from filters.exact_dedup import ExactHash, duplicates_to_drop
from filters.lm_scores import LMScorer
from filters.repetition import RepetitionMetrics
from filters.rules import SanityFilter, ThresholdFilter
from filters.token_metrics import TokenMetrics
from pipeline.stages import GenerateStage

log = logging.getLogger(__name__)


def _only_errors(batch: dict) -> dict:
    keep = np.asarray(batch["finish_reason"], dtype=object) == "error"
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def _only_ids(batch: dict, ids: frozenset) -> dict:
    keep = np.array([i in ids for i in batch["id"]], dtype=bool)
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def generate(todo: list[dict], teacher: dict, checkpoint_dir: Path, cluster: dict, generator=None):
    """Answer ``todo`` with an actor pool of teachers; return the (materialized) failed rows.

    A multi-step ``generator`` (generators/protocol.py) runs all its calls per row inside the stage.

    Successful rows go to checkpoint files, not into the returned dataset.
    """
    import ray
    from ray.data import ActorPoolStrategy

    ds = ray.data.from_arrow(pa.Table.from_pylist(todo))
    ds = ds.map_batches(
        GenerateStage,
        fn_constructor_kwargs={
            "teacher": teacher,
            "checkpoint_dir": str(checkpoint_dir),
            "generator": generator,
        },
        batch_size=cluster["teacher_batch_size"],
        compute=ActorPoolStrategy(size=cluster["teacher_actors"]),
        num_gpus=cluster["teacher_gpus"] or None,
        num_cpus=cluster["teacher_cpus"],
    )
    return ds.map_batches(_only_errors, batch_format="numpy").materialize()


def generated(files: list[Path], plan_ids: frozenset, errors=None):
    """The generated rows of this plan: checkpoints (and this run's failures) as one dataset."""
    import ray

    ds = ray.data.read_parquet([str(f) for f in files]) if files else None
    if ds is not None:
        ds = ds.map_batches(_only_ids, fn_kwargs={"ids": plan_ids}, batch_format="numpy")
    if errors is not None and errors.count():
        ds = errors if ds is None else ds.union(errors)
    return ds


def _call_stage(batch: dict, stage: type, kwargs: dict) -> dict:
    return stage(**kwargs)(batch)


# Logical CPUs of a light task. Actor pools (tokenizer, scorer model) hold their CPUs for the
# whole pass; tasks downstream of them must still fit beside them, or a 2-CPU run deadlocks.
LIGHT_CPUS = 0.25


def light(ds, stage: type, **kwargs):
    """Run a stage with no heavy state as Ray tasks (built per batch) instead of an actor pool."""
    return ds.map_batches(
        _call_stage, fn_kwargs={"stage": stage, "kwargs": kwargs}, batch_format="numpy", num_cpus=LIGHT_CPUS
    )


def score_and_filter(
    ds, filters: dict, cluster: dict, text_column: str = "text", clean: bool = True, extra: list | tuple = ()
):
    """Clean (generated text only), score and mark drops: every row stays, with ``drop_reason``.

    ``extra``: the generator's own ``(stage, kwargs)`` scorers and filters, run last as tasks (a stage
    with heavy state caches it per worker process, as filters/dense.py does with its tokenizer).
    """
    from ray.data import ActorPoolStrategy

    if clean:
        ds = light(ds, Cleaner, truncated=filters["truncated"], text_column=text_column)
    ds = ds.map_batches(
        TokenMetrics,
        fn_constructor_kwargs={
            "tokenizer": filters["tokenizer"],
            "text_column": text_column,
            "cache_dir": filters.get("cache_dir"),
        },
        batch_size=cluster["scorer_batch_size"],
        compute=ActorPoolStrategy(size=cluster["scorer_actors"]),
        num_cpus=cluster.get("scorer_cpus", 0.5),
        batch_format="numpy",
    )
    ngram_bounds = {int(k): float(v) for k, v in filters["max_dup_ngram_frac"].items()}
    ds = light(ds, RepetitionMetrics, ngrams=tuple(sorted(ngram_bounds)), text_column=text_column)
    ds = light(
        ds,
        SanityFilter,
        drop_truncated=filters["truncated"] == "drop",
        min_words=filters["min_words"],
        max_dup_line_frac=filters["max_dup_line_frac"],
        max_dup_ngram_frac=ngram_bounds,
        text_column=text_column,
    )
    if filters.get("lm"):
        # The scorer model (bits per byte, attention metrics; docs/metrics.md), one per actor, after
        # the cheap filters: rows already dropped cost it nothing.
        ds = ds.map_batches(
            LMScorer,
            fn_constructor_kwargs={
                **filters["lm"],
                "text_column": text_column,
                "cache_dir": filters.get("cache_dir"),
            },
            batch_size=cluster["scorer_batch_size"],
            compute=ActorPoolStrategy(size=cluster["scorer_actors"]),
            num_cpus=cluster.get("scorer_cpus", 0.5),
            num_gpus=cluster.get("scorer_gpus") or None,
            batch_format="numpy",
        )
    if filters.get("thresholds"):
        ds = light(ds, ThresholdFilter, bounds={k: dict(v) for k, v in filters["thresholds"].items()})
    for stage, kwargs in extra:  # as tasks: another actor pool could starve them of CPUs on small machines
        ds = light(ds, stage, **kwargs)
    return ds


def quantile_filter(ds, bands: dict):
    """Keep each score inside a quantile band of the rows still kept, e.g. ``{bits_per_byte_v1: [0.1, 0.9]}``.

    Quantiles are global, so they are computed in the driver from the score columns (8 bytes a
    row), turned into absolute bounds, and applied like ``filters.thresholds``; a row outside is
    dropped as ``{column}_below_min`` / ``{column}_above_max``.
    """
    ds = ds.materialize()
    table = pull(ds, ["drop_reason", *bands])
    kept = np.asarray(table.column("drop_reason").to_pylist(), dtype=object) == ""
    bounds = {}
    for column, (low, high) in bands.items():
        values = table.column(column).to_numpy(zero_copy_only=False).astype(float)[kept]
        values = values[~np.isnan(values)]
        if values.size:
            bounds[column] = {"min": float(np.quantile(values, low)), "max": float(np.quantile(values, high))}
    log.info("quantile bands as bounds: %s", bounds)
    return light(ds, ThresholdFilter, bounds=bounds) if bounds else ds


def pull(ds, columns: list[str]) -> pa.Table:
    """Bring a few narrow columns of a materialized dataset to the driver (no text)."""
    import ray

    return pa.concat_tables(ray.get(ds.select_columns(columns).to_arrow_refs()))


def exact_dedup(ds, text_column: str = "text"):
    """Mark all but the smallest id of each group of identical (normalised) kept texts.

    Only ids, 8-byte hashes and drop reasons reach the driver (about 40 bytes a row), which
    groups them in one pass; the marks go back out with a map over the blocks.
    """
    ds = light(ds, ExactHash, text_column=text_column).materialize()
    table = pull(ds, ["id", "text_hash", "drop_reason"])
    kept = np.asarray(table.column("drop_reason").to_pylist(), dtype=object) == ""
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)[kept]
    hashes = table.column("text_hash").to_numpy()[kept]
    drop = duplicates_to_drop(list(ids), [int(h) for h in hashes])
    log.info("exact dedup: %d duplicates", len(drop))
    return ds.map_batches(_mark_duplicates, fn_kwargs={"drop": drop}, batch_format="numpy")


def _mark_duplicates(batch: dict, drop: dict) -> dict:
    reasons = np.asarray(batch["drop_reason"], dtype=object).copy()
    duplicate_of = np.array([drop.get(i, "") for i in batch["id"]], dtype=object)
    reasons[(reasons == "") & (duplicate_of != "")] = "exact_duplicate"
    batch["drop_reason"] = reasons
    batch["duplicate_of"] = duplicate_of
    return batch
