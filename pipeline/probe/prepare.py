"""Everything a probe settles before a student trains, in the driver and without Ray: the config's
values, the pool (one, or several named ones) and the evaluation sets kept apart, the target tokens
compacted to a student vocabulary, and every arm's rows for every seed. ``litho probe``
(pipeline/probe/run.py) trains on it with Ray tasks; pipeline/probe/pack.py writes it to one file for
the GPU runner, which needs neither Ray nor Hydra."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from pipeline.probe import arms as arm_lib
from pipeline.probe import pool as pool_lib
from pipeline.probe.student import Vocab, build_vocab

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A probe's data: the pool, its tokens, the evaluation sets, the vocabulary and the arms' rows."""

    source: str
    pool: pool_lib.Pool
    rows_read: int
    overlap: int
    evals: dict[str, list[str]]
    eval_ids: dict[str, list[np.ndarray]]
    eval_data: dict[str, tuple[list[np.ndarray], int]]  # compact ids per document, UTF-8 bytes
    vocab: Vocab
    flat: np.ndarray  # every pool row's compact ids, concatenated
    offsets: np.ndarray
    tokens: np.ndarray  # stream tokens per row: its tokens and the separator that leads it
    arm_list: list[arm_lib.Arm]
    chosen: dict[tuple[str, int], np.ndarray]
    budget: int
    seeds: int
    student: dict
    filters: dict
    how: dict  # what select() needs besides the arm: keep, bins, labels, max_repeats
    timings: dict = field(default_factory=dict)


def positive_int(cfg, key: str, minimum: int = 1) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value}: give an integer >= {minimum}")
    return value


def positive_number(cfg, key: str) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{key}={value}: give a number > 0")
    return float(value)


def read_pools(cfg: DictConfig, filters: dict) -> tuple[str, pool_lib.Pool]:
    """``pool``, or every pool of ``pools`` labelled by its name (``builtin`` scored once and cached)."""

    def source(spec: str) -> str:
        if spec != "builtin":
            return spec
        b = cfg.builtin  # scored once by litho score (which runs its own Ray), then cached
        return str(
            pool_lib.builtin_pool(
                cfg.paths.cache_dir, list(b.sources), int(b.max_chars), bool(b.lm), str(filters["tokenizer"])
            )
        )

    def read(spec: str, group_column) -> pool_lib.Pool:
        files = pool_lib.pool_files(source(str(spec)), str(cfg.pool_rows))
        return pool_lib.read_pool(files, str(cfg.text_column), group_column)

    pools = OmegaConf.to_container(cfg.pools, resolve=True) if cfg.get("pools") else None
    if not pools:
        spec = str(cfg.pool)
        return source(spec), read(spec, cfg.group_column)
    if not isinstance(pools, dict) or len(pools) < 2:
        raise ConfigError(
            f"pools={pools}: give two or more named pools, e.g. {{real: builtin, synthetic: /data/run1}}"
        )
    named = {str(name): read(str(spec), None) for name, spec in pools.items()}
    return ", ".join(f"{n}={s}" for n, s in pools.items()), pool_lib.concat(named)


def prepare(cfg: DictConfig, student: dict, fit: bool = False) -> Prepared:
    """Read, decontaminate, tokenize and choose every arm's rows (the arms need no training); with
    ``fit``, a budget some arm cannot fill is lowered to the largest every arm can.

    Raises:
        ConfigError: bad input or an arm that cannot fill its budget, before any student trains.
    """
    from filters.tokenizers import load_target_tokenizer

    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    budget, seeds = int(cfg.budget_tokens), int(cfg.seeds)
    timings: dict[str, float] = {}

    # The pool and the evaluation sets; pool rows that overlap an evaluation set are dropped.
    t0 = time.perf_counter()
    source, pool = read_pools(cfg, filters)
    ev = cfg.eval
    evals = pool_lib.eval_sets(
        list(ev.builtin or []), dict(ev.files or {}), str(ev.text_column), int(ev.max_chars)
    )
    overlap = pool_lib.contaminated(pool.texts, evals, int(cfg.decontaminate_ngram))
    rows_read = len(pool.texts)
    pool = pool.subset(~overlap & np.asarray([bool(t.strip()) for t in pool.texts], dtype=bool))
    if not pool.texts:
        raise ConfigError(f"pool={cfg.pool}: no rows left after removing overlap with the eval sets")
    timings["read_s"] = time.perf_counter() - t0

    # Target tokens, compacted to the ids that occur.
    t0 = time.perf_counter()
    tokenizer = load_target_tokenizer(filters["tokenizer"], cache_dir=filters.get("cache_dir"))
    pool_ids = encode(tokenizer, pool.texts)
    eval_ids = {name: encode(tokenizer, texts) for name, texts in evals.items()}
    lengths = np.asarray([len(i) for i in pool_ids])
    flat_target = np.concatenate(pool_ids) if lengths.sum() else np.zeros(0, dtype=np.int64)
    vocab = build_vocab(flat_target, [np.concatenate(e) for e in eval_ids.values()], student.get("max_vocab"))
    eval_data = {
        name: ([vocab.encode(i) for i in eval_ids[name]], sum(len(t.encode("utf-8")) for t in evals[name]))
        for name in evals
    }
    tokens = lengths + 1  # each document is led by the separator
    timings["tokenize_s"] = time.perf_counter() - t0

    # Arms and their rows for every seed: all capacity problems surface here, before Ray starts.
    keep = pool_lib.filters_mask(pool, filters.get("thresholds"), filters.get("quantile_bands"))
    with_filters = cfg.filters_arm is True or (cfg.filters_arm == "auto" and not keep.all())
    halves = cfg.halves if isinstance(cfg.halves, str) else list(cfg.halves or [])
    labels = pool.groups if pool.group_column == pool_lib.POOL_COLUMN else None
    arm_list = arm_lib.build_arms(
        plain(cfg.arms),
        halves,
        plain(cfg.bands),
        plain(cfg.weighted),
        bool(cfg.length_stratified),
        with_filters,
        pool.columns,
        middle=plain(cfg.get("middle_band")) or None,
        pools=list(dict.fromkeys(labels)) if labels is not None else None,  # in the order named
        mixes=plain(cfg.get("mix")) or None,
    )
    bins = arm_lib.length_bins(tokens, int(cfg.length_bins))
    how = {"keep": keep, "bins": bins, "labels": labels, "max_repeats": int(cfg.get("max_repeats", 1))}
    try:
        chosen = choose(arm_list, tokens, pool.columns, budget, seeds, how)
    except ConfigError:
        if not fit:
            raise
        wanted, budget = (
            budget,
            largest_budget(arm_list, tokens, pool.columns, budget, how, student["seq_len"]),
        )
        if budget < student["seq_len"]:
            raise
        log.warning("probe: budget_tokens=%d does not fit this pool; fitted to %d", wanted, budget)
        chosen = choose(arm_list, tokens, pool.columns, budget, seeds, how)
    log.info(
        "probe: %d pool rows (%d tokens), %d arms x %d seeds at %d tokens; student vocab %d ids for %d distinct tokens",
        len(pool.texts),
        int(tokens.sum()),
        len(arm_list),
        seeds,
        budget,
        vocab.size,
        vocab.distinct,
    )
    return Prepared(
        source=source,
        pool=pool,
        rows_read=rows_read,
        overlap=int(overlap.sum()),
        evals=evals,
        eval_ids=eval_ids,
        eval_data=eval_data,
        vocab=vocab,
        flat=vocab.encode(flat_target).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        tokens=tokens,
        arm_list=arm_list,
        chosen=chosen,
        budget=budget,
        seeds=seeds,
        student=student,
        filters=filters,
        how=how,
        timings=timings,
    )


def choose(
    arm_list, tokens, columns, budget: int, seeds: int, how: dict
) -> dict[tuple[str, int], np.ndarray]:
    """Every arm's rows for every seed (:func:`pipeline.probe.arms.select`)."""
    return {
        (arm.name, seed): arm_lib.select(arm, tokens, columns, budget, seed, **how)
        for arm in arm_list
        for seed in range(seeds)
    }


def largest_budget(arm_list, tokens, columns, budget: int, how: dict, step: int) -> int:
    """The largest budget (a multiple of ``step``, at most ``budget``) every arm can fill at seed 0."""
    low, high = 0, budget // step
    while low < high:
        mid = (low + high + 1) // 2
        try:
            choose(arm_list, tokens, columns, mid * step, 1, how)
            low = mid
        except ConfigError:
            high = mid - 1
    return low * step


def plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def encode(tokenizer, texts: list[str], batch: int = 1024) -> list[np.ndarray]:
    ids = []
    for i in range(0, len(texts), batch):
        ids += [np.asarray(x, dtype=np.int64) for x in tokenizer.encode(texts[i : i + batch])]
    return ids


def parallel_tasks(num_cpus: float) -> int:
    """Students that train at once on this machine (for the time estimates)."""
    return max(1, int((os.cpu_count() or 1) / max(num_cpus, 1e-9)))
