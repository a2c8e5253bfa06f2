"""The shared tail of every command: score, filter, dedup, write shards, manifest and config."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from filters.token_metrics import VERSION as TOKEN_METRICS_VERSION
from pipeline import graph
from pipeline.manifest import drop_counts, litho_version, score_summaries
from pipeline.writer import Snapshot, write_json, write_shards

log = logging.getLogger(__name__)


def process(ds, cfg: DictConfig, text_column: str = "text", score: bool = True, dedup: bool = True):
    """Clean/score/filter and dedup as the config asks; rows are marked, never removed."""
    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    if score:
        ds = graph.score_and_filter(ds, filters, cluster, text_column)
    elif "drop_reason" not in ds.schema().names:
        ds = graph.light(ds, _no_drop)
    if dedup and cfg.dedup.exact:
        ds = graph.exact_dedup(ds, text_column)
    return ds


def _no_drop():
    return lambda batch: {**batch, "drop_reason": [""] * len(next(iter(batch.values())))}


def finish_run(ds, cfg: DictConfig, out: Path, counts: dict, timings: dict, started: float, source: str,
               text_column: str = "text", score: bool = True, dedup: bool = True) -> dict:
    """Process ``ds`` and write ``data/``, ``rejected/``, ``manifest.json`` and ``config.yaml`` into ``out``."""
    t0 = time.perf_counter()
    ds = process(ds, cfg, text_column, score, dedup).materialize()
    timings["score_filter_dedup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reasons = drop_counts(ds)
    kept = ds.map_batches(graph.kept_rows, batch_format="numpy").materialize()
    metadata = {
        "litho_version": litho_version(),
        "source": source,
        "scores": [TOKEN_METRICS_VERSION, "repetition_v1"] if score else [],
    }
    snapshot = Snapshot(out)
    kept_rows = reasons.get("", 0)
    dropped_rows = sum(reasons.values()) - kept_rows
    rows_per_shard = int(cfg.output.rows_per_shard)
    shards = write_shards(kept, snapshot.folder("data"), kept_rows, rows_per_shard, metadata,
                          validation_fraction=float(cfg.output.validation_fraction))
    rejected = []
    if cfg.output.write_rejected and dropped_rows:
        dropped = ds.map_batches(_dropped_rows, batch_format="numpy")
        rejected = write_shards(dropped, snapshot.folder("rejected"), dropped_rows, rows_per_shard, metadata,
                                split="rejected", drop=("_split", "_shard"))
    previous = _previous_manifest(out)
    unchanged = previous is not None and _same_files(previous, shards, rejected, out)
    snapshot.commit(("data", "rejected"), unchanged)
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    scores = score_summaries(kept) if kept_rows else {}
    manifest = {
        "litho_version": litho_version(),
        "output_dir": str(out),
        "counts": {**counts, "rows_in": sum(reasons.values()), "kept": kept_rows, "dropped": dropped_rows},
        "dropped_by_reason": {k: v for k, v in sorted(reasons.items()) if k},
        "tokens": {
            "kept_target_tokens": sum(s["tokens"] for s in shards),
            "teacher_completion_tokens": int(scores.pop("completion_tokens", {}).get("sum", 0)),
        },
        "scores": scores,
        "score_versions": metadata["scores"],
        "shards": shards,
        "rejected_shards": rejected,
        "shards_unchanged": unchanged,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    write_json(out / "manifest.json", manifest)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return manifest


def _dropped_rows(batch: dict) -> dict:
    import numpy as np

    keep = np.asarray(batch["drop_reason"], dtype=object) != ""
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def _previous_manifest(out: Path) -> dict | None:
    import json

    path = out / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _same_files(previous: dict, shards: list[dict], rejected: list[dict], out: Path) -> bool:
    """True when the staged shards equal the published ones (names and content digests)."""
    def key(rows):
        return [(r["file"], r["digest"]) for r in rows]

    published = [(out / "data" / r["file"]) for r in previous.get("shards", [])]
    return (key(previous.get("shards", [])) == key(shards)
            and key(previous.get("rejected_shards", [])) == key(rejected)
            and all(p.is_file() for p in published))
