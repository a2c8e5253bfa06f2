"""Processing: clean, score, filter and dedup, as one list of stages built from the config.

:func:`stage_list` turns ``filters/``, ``dedup/`` and the generator's own ``filters:`` block into
:class:`pipeline.stages.StageSpec` values, in run order. Rows are marked (``drop_reason``), never
removed: the writer splits kept from dropped rows at the end, so every drop is counted by stage and
reason. The dataset-level stages (quantile bands, exact dedup) live here; near dedup has its own
module (pipeline/near_dedup.py).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from filters.dedup.decontaminate import Decontaminate
from filters.dedup.exact import duplicates_to_drop, text_hashes
from filters.rules.base import DROPPED_BY, Filter, current_reasons, record_drops
from filters.rules.rule_sets import PublishedRules, check_rule_sets
from filters.rules.sanity import LengthFilter, SanityFilter
from filters.rules.superfiltering import SuperfilteringFilter
from filters.rules.thresholds import ThresholdFilter, check_bands, check_bounds
from filters.scores.clean import Cleaner
from filters.scores.judge import JudgeScores
from filters.scores.lm_scores import LMScorer
from filters.scores.rule_scores import RuleSetScores
from filters.scores.token_metrics import TokenMetrics
from generators.errors import ConfigError
from pipeline.near_dedup import near_dedup_stage
from pipeline.stages import StageSpec, columns_of, resources

log = logging.getLogger(__name__)


def class_stage(name: str, fn: type, kwargs: dict, pool: dict, kind: str | None = None, **extra) -> StageSpec:
    """A spec for a stage class from ``filters/``: its columns, kind and version from the class itself."""
    needs, adds = columns_of(fn, kwargs)
    if kind is None:
        kind = "filter" if issubclass(fn, Filter) else "score"
    version = fn.versions(**kwargs) if hasattr(fn, "versions") else getattr(fn, "version", None)
    scores = adds if kind == "score" else ()
    return StageSpec(
        name=name,
        fn=fn,
        kwargs=kwargs,
        kind=kind,
        needs=needs,
        adds=adds,
        scores=scores,
        version=version,
        **{**pool, **extra},
    )


def stage_list(
    cfg: DictConfig, command: str, text_column: str = "text", generator_filters: dict | None = None
):
    """The processing stages of ``command`` (generate, score or dedup), in run order.

    Raises:
        ConfigError: a bad value in ``filters/``, ``dedup/`` or a generator filter (named, one line).
    """
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    text = {"text_column": text_column}
    specs: list[StageSpec] = []

    def tasks(name: str) -> dict:
        return {"pool": "tasks", **resources(cluster, name, "task")}

    def actors(name: str) -> dict:
        return {"pool": "actors", **resources(cluster, name, "scorer")}

    if command in ("generate", "score"):
        if command == "generate":  # teacher output only: an existing corpus is scored as it is
            truncated = {"truncated": filters["truncated"], **text}
            specs.append(class_stage("clean", Cleaner, truncated, tasks("clean"), kind="prepare"))
        if filters.get("max_chars") is not None:  # first: a huge text is never tokenized or scored
            length = {"max_chars": int(filters["max_chars"]), **text}
            specs.append(class_stage("length", LengthFilter, length, tasks("length")))
        tokenizer = {"tokenizer": filters["tokenizer"], "cache_dir": filters.get("cache_dir"), **text}
        # Packing and the token files reuse these ids (pipeline/output/packing.py, tokenized.py); SFT token
        # files are rendered with the chat template instead.
        sft = cfg.output.get("format", "pretrain") == "sft"
        if cfg.output.get("pack_seq_len") or (cfg.output.get("token_formats") and not sft):
            tokenizer["keep_ids"] = True
        specs.append(class_stage("token_metrics", TokenMetrics, tokenizer, actors("token_metrics")))
        rule_sets, rule_thresholds = check_rule_sets(filters.get("rule_sets"), filters.get("rule_thresholds"))
        if rule_sets:
            # One stage scores every rule set (one word split per text), in actors: each loads spaCy once.
            scores = {"rule_sets": tuple(rule_sets), **text}
            pool = actors("rule_scores")
            if "num_cpus" not in ((cluster.get("stages") or {}).get("rule_scores") or {}):
                # A task's share: light Python, and the scorer pools, the judge and a task still fit on 2 CPUs.
                pool["num_cpus"] = cluster.get("task_cpus", 0.25)
            specs.append(class_stage("rule_scores", RuleSetScores, scores, pool))
        sanity = {"drop_truncated": filters["truncated"] == "drop", "min_words": filters["min_words"], **text}
        specs.append(class_stage("sanity", SanityFilter, sanity, tasks("sanity")))
        for name in rule_sets:  # each published rule set drops under its own name, in the order given
            rules = {"rule_set": name, "thresholds": rule_thresholds.get(name), **text}
            specs.append(class_stage(name, PublishedRules, rules, tasks(name)))
        if filters.get("lm"):
            # The scorer model (bits per byte, attention metrics; docs/metrics.md), one per actor, after
            # the cheap filters: rows already dropped cost it nothing.
            lm = {**filters["lm"], "cache_dir": filters.get("cache_dir"), **text}
            # IFD scores a text after its request: a generated row's chat messages, or a corpus's
            # prompt_column. ref_gap_v1 needs a second model, checked here before Ray starts.
            lm["prompt_column"] = "prompt" if command == "generate" else cfg.get("prompt_column")
            lm["reference"] = filters.get("lm_reference")
            if lm["reference"]:
                from generators.teachers.models import resolve

                resolve(str(lm["reference"]), "filters.lm_reference", bool(filters.get("allow_network")))
            keys = {lm["prompt_column"]: "prompt_column"} if command == "score" else {}
            specs.append(class_stage("lm_scores", LMScorer, lm, actors("lm_scores"), keys=keys))
            if filters.get("max_ifd") is not None and "ifd_v1" in specs[-1].adds:
                # Superfiltering: a text its request does not help predict is dropped (docs/probe.md).
                rule = {"max_ifd": _positive(filters["max_ifd"], "filters.max_ifd")}
                specs.append(
                    class_stage("superfiltering", SuperfilteringFilter, rule, tasks("superfiltering"))
                )
        if filters.get("judge"):
            # A teacher rates every kept row on the rubrics; ratings are checkpointed per output dir.
            specs.append(_judge_stage(cfg, filters["judge"], text, cluster))
        bounds = check_bounds(filters.get("thresholds"))
        if bounds:
            keys = {c: f"filters.thresholds.{c}" for c in bounds}
            specs.append(
                class_stage("thresholds", ThresholdFilter, {"bounds": bounds}, tasks("thresholds"), keys=keys)
            )
        for name, settings in (generator_filters or {}).items():
            specs.append(_generator_stage(name, dict(settings), tasks(name)))
    dedup = OmegaConf.to_container(cfg.dedup, resolve=True) if "dedup" in cfg else {}
    if dedup.get("decontaminate"):
        # Before quantile bands and dedup: a contaminated row must neither shift a band nor be kept
        # as the representative of a cluster.
        settings = {"cache_dir": filters.get("cache_dir"), **dedup["decontaminate"], **text}
        specs.append(class_stage("decontaminate", Decontaminate, settings, actors("decontaminate")))
    if command in ("generate", "score"):
        bands = check_bands(filters.get("quantile_bands"))
        if bands:
            specs.append(
                StageSpec(
                    name="quantile_bands",
                    fn=quantile_bands,
                    kwargs={"bands": bands},
                    kind="filter",
                    pool="dataset",
                    needs=tuple(bands),
                    keys={c: f"filters.quantile_bands.{c}" for c in bands},
                )
            )
    if dedup.get("exact"):
        task = resources(cluster, "exact_dedup", "task")
        specs.append(
            StageSpec(
                name="exact_dedup",
                fn=exact_dedup,
                kwargs={"text_column": text_column, "num_cpus": task["num_cpus"]},
                kind="dedup",
                pool="dataset",
                needs=(text_column, "id"),
                adds=("text_hash", "duplicate_of"),
            )
        )
    if dedup.get("minhash"):
        from filters.dedup.minhash import MinHashConfig

        minhash = dedup["minhash"]
        settings = MinHashConfig.from_dict(minhash)  # one-line errors for bad keys, before Ray starts
        task = resources(cluster, "near_dedup", "task")
        needs = (text_column, "id") + ((settings.keep_by,) if settings.keep_by else ())
        keys = {settings.keep_by: f"dedup.minhash.keep_by={settings.keep_by}"} if settings.keep_by else {}
        specs.append(
            StageSpec(
                name="near_dedup",
                fn=near_dedup_stage,
                kwargs={
                    "minhash": minhash,
                    "output_dir": str(cfg.output.dir),
                    "text_column": text_column,
                    "concurrency": task["concurrency"],
                    "num_cpus": task["num_cpus"],
                },
                kind="dedup",
                pool="dataset",
                needs=needs,
                adds=("cluster_id", "duplicate_of"),
                keys=keys,
            )
        )
    return specs


def _positive(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            f"{key}={value}: give a number > 0 (Superfiltering uses 1.0), or null to turn it off"
        )
    return float(value)


def _judge_stage(cfg: DictConfig, judge: dict, text: dict, cluster: dict) -> StageSpec:
    """``filters.judge``: its teacher (a conf/teacher/ mapping), rubrics and scale; the judge runs in the
    teacher pool's place (``cluster.judge_*`` keys via ``cluster.stages.judge``)."""
    from pathlib import Path

    from filters.scores.judge import fingerprint

    judge = dict(judge)
    teacher = judge.pop("teacher", None)
    if not isinstance(teacher, dict) or "_target_" not in teacher:
        raise ConfigError(
            "filters.judge.teacher: give a teacher config with _target_, e.g. the embedded teacher's conf/teacher/hf.yaml"
        )
    if teacher.get("model") is not None and "base_url" not in teacher:  # a local model, not a served name
        from generators.teachers.models import resolve

        resolve(teacher["model"], "filters.judge.teacher.model", bool(teacher.get("allow_network", False)))
    unknown = sorted(set(judge) - {"rubrics", "scale", "sampling", "max_chars"})
    if unknown:
        raise ConfigError(
            f"filters.judge: unknown keys {unknown}; use teacher, rubrics, scale, sampling, max_chars"
        )
    from pipeline.validate import work_dir

    out = Path(work_dir(cfg)[1]).expanduser().resolve()
    made_by = fingerprint(
        teacher, judge.get("rubrics") or {}, judge.get("scale", (1, 10)), judge.get("sampling")
    )
    ckpt = out / ".litho" / "judgements" / made_by
    kwargs = {"teacher": teacher, "checkpoint_dir": str(ckpt), **judge, **text}
    pool = resources(cluster, "judge", "scorer")
    return class_stage("judge", JudgeScores, kwargs, {"pool": "actors", **pool})


def _generator_stage(name: str, settings: dict, pool: dict) -> StageSpec:
    """A scorer or rule a generator names in its ``filters:`` block (``{_target_: class, **kwargs}``)."""
    target = settings.pop("_target_", None)
    if not target:
        raise ConfigError(
            f"generator.filters.{name}: give _target_, the stage class (e.g. filters.rules.dense.DenseFilter)"
        )
    try:
        fn = get_class(target)
    except Exception:
        raise ConfigError(f"generator.filters.{name}._target_={target}: no such class") from None
    spec = class_stage(name, fn, settings, pool)
    if issubclass(fn, Filter) and fn(**settings).name != name:
        # Drops are counted under the rule's own name; the config key must say the same.
        raise ConfigError(
            f"generator.filters.{name}: this rule counts its drops as {fn(**settings).name!r}; use that key"
        )
    return spec


def quantile_bands(ds, bands: dict):
    """Dataset stage: keep each score inside a quantile band of the rows still kept, e.g.
    ``{bits_per_byte_v1: [0.1, 0.9]}``.

    Quantiles are global: they are computed exactly inside Ray (:func:`pipeline.aggregate.quantiles`,
    the same floats as ``np.quantile`` over all the kept values), turned into absolute bounds, and
    applied like ``filters.thresholds``; a row outside is dropped as ``{column}_below_min`` /
    ``{column}_above_max``.
    """
    from pipeline.aggregate import quantiles

    found = quantiles(ds, {c: list(band) for c, band in bands.items()})
    bounds = {c: {"min": lo, "max": hi} for c, (lo, hi) in found.items()}
    log.info("quantile bands as bounds: %s", bounds)
    if not bounds:
        return ds
    return ds.map_batches(_threshold, fn_kwargs={"bounds": bounds}, batch_format="numpy")


def _threshold(batch: dict, bounds: dict) -> dict:
    return ThresholdFilter(bounds, name="quantile_bands")(batch)


BROADCAST_DUPLICATES = 2_000_000  # duplicate ids every task reads (~40 MB); more: the rows are shuffled


def exact_dedup(ds, text_column: str = "text", num_cpus: float = 0.25):
    """Dataset stage: mark all but the smallest id of each group of identical (normalised) kept texts.

    Ids and text hashes (not the texts) are hash-partitioned by text hash (:mod:`pipeline.partition`),
    so every group of identical texts is decided inside one task. The duplicates found are marked by
    a map whose tasks read them from the object store by reference; when there are more than
    :data:`BROADCAST_DUPLICATES`, the whole rows are partitioned by text hash instead and marked where
    they are decided. Nothing per row reaches the driver.
    """
    from pipeline.partition import nonempty, partition_map, parts_for

    ds = nonempty(
        ds.map_batches(
            _hash, fn_kwargs={"text_column": text_column}, batch_format="pyarrow", num_cpus=num_cpus
        )
    )
    parts = parts_for(ds)
    keys = ds.select_columns(["id", "text_hash", "drop_reason"])
    drops = nonempty(partition_map(keys, "text_hash", _drops_in_partition, parts))
    found = drops.count()
    log.info("exact dedup: %d duplicates", found)
    if found > BROADCAST_DUPLICATES:
        return partition_map(ds, "text_hash", _dedup_partition, parts)
    refs = drops.to_arrow_refs() if found else []
    return ds.map_batches(_mark_from_refs, fn_kwargs={"refs": refs}, batch_format="pyarrow")


def _hash(table: pa.Table, text_column: str) -> pa.Table:
    """Adds ``text_hash`` (:class:`filters.dedup.exact.ExactHash`) to an Arrow block: only the text
    column is converted, the others pass through as they are."""
    hashes = text_hashes(table.column(text_column).to_pylist())
    return table.drop_columns([c for c in ("text_hash",) if c in table.column_names]).append_column(
        "text_hash", pa.array(hashes, pa.int64())
    )


def _drop_map(batch: dict) -> dict:
    kept = np.asarray(batch["drop_reason"], dtype=object) == ""
    ids = np.asarray(batch["id"], dtype=object)[kept]
    hashes = np.asarray(batch["text_hash"])[kept]
    return duplicates_to_drop(list(ids), [int(h) for h in hashes])


def _drops_in_partition(batch: dict) -> dict:
    drop = _drop_map(batch)
    return {
        "id": np.asarray(list(drop), dtype=object),
        "duplicate_of": np.asarray(list(drop.values()), dtype=object),
    }


def _dedup_partition(batch: dict) -> dict:
    return _mark_duplicates(batch, _drop_map(batch))


_DROPS: dict[tuple, dict] = {}


def _mark_from_refs(table: pa.Table, refs: list) -> pa.Table:
    """``_mark_duplicates`` with the duplicates read once per worker from the object store, on an Arrow
    block: only the bookkeeping columns are converted to numpy and replaced; the texts pass through."""
    key = tuple(r.hex() for r in refs)
    if key not in _DROPS:
        import ray

        _DROPS.clear()
        tables = ray.get(list(refs)) if refs else []
        _DROPS[key] = {
            i: k
            for t in tables
            for i, k in zip(t.column("id").to_pylist(), t.column("duplicate_of").to_pylist())
        }
    names = [c for c in ("id", "drop_reason", DROPPED_BY) if c in table.column_names]
    batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in names}
    marked = _mark_duplicates(batch, _DROPS[key])
    for name, values in marked.items():
        if name in ("drop_reason", DROPPED_BY, "duplicate_of"):
            column = pa.array(values, pa.string())
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, column)
            else:
                table = table.append_column(name, column)
    return table


def _mark_duplicates(batch: dict, drop: dict) -> dict:
    before = current_reasons(batch)
    duplicate_of = np.array([drop.get(i, "") for i in batch["id"]], dtype=object)
    reasons = before.copy()
    reasons[(reasons == "") & (duplicate_of != "")] = "exact_duplicate"
    record_drops(batch, before, reasons, "exact_dedup")
    batch["duplicate_of"] = duplicate_of
    return batch
