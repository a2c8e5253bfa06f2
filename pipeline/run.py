"""The whole job, top to bottom: plan → generate → process → select → write → pack → token files → card.

``run(cfg, command)`` does the work for ``litho generate`` (and, reading a corpus instead of
generating, for ``litho score`` and ``litho dedup``); the ``litho`` command (pipeline/cli.py) and
the tests call it with a composed config.
"""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run(cfg: DictConfig, command: str = "generate") -> dict:
    """Run one command for a composed config; return the manifest."""
    from pipeline import aggregate, faults, stages
    from pipeline.checkpoint_stream import teacher_usage
    from pipeline.cluster import connect
    from pipeline.generate import generate, generated, to_generate
    from pipeline.inputs import read_corpus
    from pipeline.job import Job
    from pipeline.near_dedup import index_run_id, write_dedup_index
    from pipeline.output import manifest as manifests
    from pipeline.output.card import write_card
    from pipeline.output.packing import pack_run
    from pipeline.output.report import write_report
    from pipeline.output.snapshot import read_json, write_json
    from pipeline.output.store import is_uri, publish_to_store
    from pipeline.output.tokenized import remove_stale, run_sources, write_token_files
    from pipeline.output.writer import publish, split_counter
    from pipeline.progress import teacher_progress
    from pipeline.validate import check_token_files

    started = time.perf_counter()
    timings: dict[str, float] = {}
    # Every check, and the stage list, before Ray starts or a model loads.
    job = Job.from_config(cfg, command)
    out = job.out

    counts: dict[str, int] = {}
    usage = first_tokens = None
    timings["plan_s"] = time.perf_counter() - started
    with connect(job.cluster, allow_network=job.allow_network):
        if job.plan is not None:
            # Plan: the requests of this config and seed, planned block by block inside Ray; a block's
            # requests already in its checkpoints (an earlier run's) are reused.
            t0 = time.perf_counter()
            plan = job.plan
            todo, blocks, n_todo = to_generate(plan, job.checkpoint_dir)
            log.info("plan: %d requests, %d to generate", plan.rows, n_todo)
            timings["plan_s"] += time.perf_counter() - t0
            # Generate: the teacher answers what is missing; every row then comes from the checkpoints.
            t0 = time.perf_counter()
            with teacher_progress(
                job.checkpoint_dir,
                job.generate.kwargs["run"],
                n_todo,
                float(job.cluster.get("progress_interval") or 30),
                bool(job.cluster.get("progress", True)),
            ) as progress:
                faults.phase("generate", watch=job.checkpoint_dir)
                errors = generate(todo, job.generate) if n_todo else None
            if progress is not None:  # when the live progress first counted tokens, from the phase's start
                first_tokens = progress.first_tokens
            failed = errors.count() if errors is not None else 0
            price = job.cfg.teacher.get("price")
            price = OmegaConf.to_container(price, resolve=True) if price is not None else None
            usage = teacher_usage(job.checkpoint_dir, job.generate.kwargs["run"], price)
            ds = generated(plan, job.checkpoint_dir, blocks, errors)
            counts = {
                "planned": plan.rows,
                "reused": plan.rows - n_todo,
                "generated": n_todo - failed,
                "teacher_errors": failed,
            }
            timings["generate_s"] = time.perf_counter() - t0
        else:
            ds = read_corpus(cfg.input, job.text_column, cfg.get("id_column"))

        # Process and select: score, filter, dedup, best-of-n. Rows are marked, never removed.
        t0 = time.perf_counter()
        stage_seconds: dict[str, float] = {}
        faults.phase("process")
        rows = job.plan.rows if job.plan is not None else None  # a small run shares its scorers (stages.py)
        ds = stages.apply(ds, job.process, stage_seconds, rows)
        ds = stages.apply(ds, job.select, stage_seconds, rows).materialize()
        timings["score_filter_dedup_s"] = time.perf_counter() - t0
        log.info(
            "scored, filtered and deduplicated %d rows in %.1f s", ds.count(), timings["score_filter_dedup_s"]
        )

        # Write: kept rows to data/, dropped rows to rejected/, swapped in whole.
        t0 = time.perf_counter()
        # Accounting: counts per reason, stage and split, score sums and exact quantiles, computed per
        # block in Ray and merged in the driver (pipeline/aggregate.py).
        output = OmegaConf.to_container(cfg.output, resolve=True)
        scores = manifests.numeric(ds.schema().base_schema, job.score_columns())
        stats = aggregate.summary(
            ds, scores, split_fn=split_counter(float(output.get("validation_fraction", 0.0)))
        )
        quantiles = aggregate.quantiles(ds, {c: list(manifests.QUANTILES) for c in scores}, stats)
        metadata = {
            "litho_version": manifests.litho_version(),
            "source": job.source,
            "scores": job.score_versions(),
        }
        faults.phase("write")
        published = publish(ds, stats.get("splits", {}), out, output, metadata)
        minhash = OmegaConf.to_container(cfg.dedup, resolve=True).get("minhash") if "dedup" in cfg else None
        kept = sum(n for (reason, _), n in stats.get("reasons", {}).items() if reason == "")
        if kept and minhash and minhash.get("index_dir"):
            # After the shards: an interrupted run leaves the index as it was.
            faults.phase("index")
            write_dedup_index(ds, minhash, index_run_id(cfg.output.dir), text_column=job.text_column)
        timings["write_s"] = time.perf_counter() - t0
        manifest = manifests.build(job, stats, quantiles, counts, published, stage_seconds, timings, scores)
        if usage is not None:  # this run's teacher calls: tokens, and the cost when teacher.price is set
            manifest["teacher_usage"] = usage | (
                {"first_tokens_s": round(first_tokens, 2)} if first_tokens else {}
            )

        # Pack: fixed-length rows of target-tokenizer ids, from the published shards, in Ray tasks.
        if cfg.output.get("pack_seq_len"):
            filters = OmegaConf.to_container(cfg.filters, resolve=True)
            seq_len = int(cfg.output.pack_seq_len)
            max_bytes = cfg.output.get("max_shard_bytes")
            rows = max(1, max_bytes // (4 * seq_len)) if max_bytes else int(cfg.output.rows_per_shard)
            faults.phase("pack")
            manifest["packed"] = pack_run(
                out,
                seq_len,
                filters["tokenizer"],
                rows,
                filters.get("cache_dir"),
                bool(filters.get("allow_network")),
            )
        # Token files: what Megatron, nanotron and OLMo read as they are, from the ids stored beside the
        # published shards, one Ray task per shard (pipeline/output/tokenized.py).
        token_files = check_token_files(cfg)
        if token_files:
            t0 = time.perf_counter()
            previous = (read_json(out / "manifest.json") or {}).get("tokenized")
            sources = run_sources(out, manifest["shards"], job.text_column)
            manifest["tokenized"] = write_token_files(out, sources, token_files, previous)
            manifest["timings_s"]["token_files_s"] = round(time.perf_counter() - t0, 2)
        else:
            remove_stale(out)
    manifest["timings_s"]["total_s"] = round(time.perf_counter() - started, 2)

    # Card: README.md beside the shards, and report.html; then the manifest and the resolved config.
    manifest["card"] = write_card(out, cfg, manifest)
    manifest["report"] = write_report(out, manifest, cfg)  # report.html: plots, examples, timings
    write_json(out / "manifest.json", manifest)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if is_uri(cfg.output.dir):  # an object store: the published files go there, the manifest last
        log.info("object store: %s", publish_to_store(out, str(cfg.output.dir)))
    return manifest
