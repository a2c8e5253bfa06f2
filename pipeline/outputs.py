"""The shared tail of every command: score, filter, dedup, write shards, manifest and config."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import xxhash
from omegaconf import DictConfig, OmegaConf

from filters.token_metrics import VERSION as TOKEN_METRICS_VERSION
from pipeline import formats, graph
from pipeline.manifest import account, litho_version, score_columns
from pipeline.stages import extra_filters
from pipeline.writer import Snapshot, plan_shards, write_json, write_shards

log = logging.getLogger(__name__)


def process(
    ds, cfg: DictConfig, text_column: str = "text", score: bool = True, dedup: bool = True, clean: bool = True
):
    """Clean/score/filter and dedup as the config asks; rows are marked, never removed."""
    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    if score:
        ds = graph.score_and_filter(ds, filters, cluster, text_column, clean, extra_filters(cfg))
        if filters.get("quantile_bands"):
            ds = graph.quantile_filter(ds, filters["quantile_bands"])
    if dedup and cfg.dedup.exact:
        ds = graph.exact_dedup(ds, text_column)
    if dedup and cfg.dedup.get("minhash"):
        from pipeline.dedup_graph import near_dedup_dataset

        minhash = OmegaConf.to_container(cfg.dedup.minhash, resolve=True)
        if minhash.get("index_dir"):
            # A rerun into the same output dir must not find its own texts in the cross-run index.
            shutil.rmtree(Path(minhash["index_dir"]) / f"run={index_run_id(cfg)}", ignore_errors=True)
        ds = near_dedup_dataset(ds, minhash, text_column=text_column)
    return ds


def index_run_id(cfg: DictConfig) -> str:
    """The cross-run dedup index entry of an output directory (one per directory)."""
    return xxhash.xxh3_64_hexdigest(str(Path(cfg.output.dir).expanduser().resolve()).encode())


def finish_run(
    ds,
    cfg: DictConfig,
    out: Path,
    counts: dict,
    timings: dict,
    started: float,
    source: str,
    text_column: str = "text",
    score: bool = True,
    dedup: bool = True,
    clean: bool = True,
) -> dict:
    """Process ``ds`` and write ``data/``, ``rejected/``, ``manifest.json`` and ``config.yaml`` into ``out``."""
    t0 = time.perf_counter()
    ds = formats.prepare(process(ds, cfg, text_column, score, dedup, clean), cfg)  # materialized
    timings["score_filter_dedup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    numeric = score_columns(ds.schema().base_schema)
    table = graph.pull(ds, ["id", "drop_reason", *numeric])
    reasons, scores = account(table)
    kept_rows = reasons.get("", 0)
    metadata = {
        "litho_version": litho_version(),
        "source": source,
        "scores": (
            [TOKEN_METRICS_VERSION, "repetition_v1"] + (["lm_scores_v1"] if cfg.filters.get("lm") else [])
        )
        if score
        else [],
    }
    n_shards = plan_shards(
        table.column("id").to_pylist(),
        table.column("drop_reason").to_pylist(),
        formats.rows_per_shard(ds, cfg),
        float(cfg.output.validation_fraction),
        bool(cfg.output.write_rejected),
    )
    snapshot = Snapshot(out)
    written = write_shards(ds, snapshot.staging, n_shards, metadata, float(cfg.output.validation_fraction))
    shards = [s for s in written if s["split"] != "rejected"]
    rejected = [s for s in written if s["split"] == "rejected"]
    previous = _previous_manifest(out)
    unchanged = previous is not None and _same_files(previous, shards, rejected, out)
    snapshot.commit(("data", "rejected"), unchanged)
    if kept_rows and dedup and cfg.dedup.get("minhash") and cfg.dedup.minhash.get("index_dir"):
        from pipeline.dedup_graph import write_dedup_index

        # After the shards: an interrupted run leaves the index as it was.
        write_dedup_index(
            ds,
            OmegaConf.to_container(cfg.dedup.minhash, resolve=True),
            index_run_id(cfg),
            text_column=text_column,
        )
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    manifest = {
        "litho_version": litho_version(),
        "output_dir": str(out),
        "counts": {
            **counts,
            "rows_in": table.num_rows,
            "kept": kept_rows,
            "dropped": table.num_rows - kept_rows,
        },
        "dropped_by_reason": {k: v for k, v in sorted(reasons.items()) if k},
        "tokens": {
            "kept_target_tokens": int(scores.get("n_tokens", {}).get("sum", 0)),
            "teacher_completion_tokens": int(scores.pop("completion_tokens", {}).get("sum", 0)),
        },
        "scores": scores,
        "score_versions": metadata["scores"],
        "shards": shards,
        "rejected_shards": rejected,
        "shards_unchanged": unchanged,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    formats.after_write(out, cfg, manifest)  # packed shards, README.md
    write_json(out / "manifest.json", manifest)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return manifest


def _previous_manifest(out: Path) -> dict | None:
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
    return (
        key(previous.get("shards", [])) == key(shards)
        and key(previous.get("rejected_shards", [])) == key(rejected)
        and all(p.is_file() for p in published)
    )
