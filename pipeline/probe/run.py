"""``litho probe``, top to bottom: read the pool and the evaluation sets, keep them apart, tokenize,
choose every arm's rows at one token budget, train one student per arm x seed as a Ray task,
and write the statistics (probe.json) and the plot (probe.png).

Every check, every arm's rows and every capacity problem is settled in the driver before Ray starts
(only ``pool=builtin`` runs ``litho score`` first, once, and caches it); a Ray task only turns rows
into a token stream, trains and evaluates (:func:`train_and_evaluate`, plain Python). Each finished
arm x seed is appended to ``runs.jsonl`` in the output directory under a key of everything it
depends on, so a rerun of the same config (after a crash, or with more arms or seeds) trains only
what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import xxhash
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from pipeline.probe import arms as arm_lib
from pipeline.probe import pool as pool_lib
from pipeline.probe.student import SEPARATOR, StudentConfig, Vocab, bits_per_byte, build_vocab, train_student

log = logging.getLogger(__name__)


def train_and_evaluate(
    arm: str,
    seed: int,
    rows: np.ndarray,
    flat: np.ndarray,
    offsets: np.ndarray,
    budget: int,
    evals: dict[str, tuple[list[np.ndarray], int]],
    vocab: Vocab,
    student: dict,
) -> dict:
    """One arm x seed: the rows' stream, a fresh student trained on it, bits per byte on every eval set."""
    cfg = StudentConfig.from_dict(student)
    stream = arm_lib.stream(rows, flat, offsets, budget, SEPARATOR)
    model, stats = train_student(stream, vocab.size, cfg, seed)
    started = time.perf_counter()
    bpb = {name: bits_per_byte(model, docs, n_bytes, vocab, cfg) for name, (docs, n_bytes) in evals.items()}
    stats["eval_s"] = round(time.perf_counter() - started, 3)
    return {"arm": arm, "seed": seed, "docs": int(len(rows)), "bpb": bpb, **stats}


def _positive_int(cfg, key: str, minimum: int = 1) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value}: give an integer >= {minimum}")
    return value


def check(cfg: DictConfig) -> dict:
    """Every value a user can get wrong that needs no data; returns the student settings.

    Raises:
        ConfigError: the first bad key, as one line.
    """
    _positive_int(cfg, "seeds")
    _positive_int(cfg, "length_bins")
    _positive_int(cfg, "decontaminate_ngram", 0)
    student = OmegaConf.to_container(cfg.student, resolve=True)
    for key in ("hidden_size", "layers", "heads", "intermediate_size", "seq_len", "batch_size", "epochs"):
        _positive_int(cfg, f"student.{key}")
    _positive_int(cfg, "student.threads", 0)
    if student["hidden_size"] % student["heads"]:
        raise ConfigError(
            f"student.heads={student['heads']}: must divide student.hidden_size={student['hidden_size']}"
        )
    if student.get("max_vocab") is not None:
        _positive_int(cfg, "student.max_vocab", 2)
    if student["dtype"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"student.dtype={student['dtype']}: use auto, bf16 or fp32")
    if not (student["device"] in ("auto", "cpu") or str(student["device"]).startswith("cuda")):
        raise ConfigError(f"student.device={student['device']}: use auto, cpu or cuda")
    _positive_int(cfg, "budget_tokens", student["seq_len"])
    if cfg.filters_arm not in ("auto", True, False):
        raise ConfigError(f"filters_arm={cfg.filters_arm}: use auto, true or false")
    for key in ("num_cpus", "num_gpus"):
        value = cfg.resources[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"resources.{key}={value}: give a number >= 0")
    _positive_int(cfg, "eval.max_chars")
    return student


def run_probe(cfg: DictConfig) -> dict:
    """Run the probe of a composed ``conf/probe.yaml``; return the report (also written as probe.json).

    Raises:
        ConfigError: bad config or input, before any student trains.
    """
    import ray

    from filters.tokenizers import load_target_tokenizer
    from pipeline import validate
    from pipeline.cluster import connect
    from pipeline.probe import report

    started = time.perf_counter()
    load_before = os.getloadavg()
    student = check(cfg)
    out = validate.check_common(cfg)  # output dir, target tokenizer, cluster mode
    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    budget, seeds = int(cfg.budget_tokens), int(cfg.seeds)
    timings: dict[str, float] = {}

    # The pool and the evaluation sets; pool rows that overlap an evaluation set are dropped.
    t0 = time.perf_counter()
    source = str(cfg.pool)
    if source == "builtin":  # scored once by litho score (which runs its own Ray), then cached
        b = cfg.builtin
        source = str(
            pool_lib.builtin_pool(
                cfg.paths.cache_dir, list(b.sources), int(b.max_chars), bool(b.lm), str(filters["tokenizer"])
            )
        )
    pool = pool_lib.read_pool(
        pool_lib.pool_files(source, str(cfg.pool_rows)), str(cfg.text_column), cfg.group_column
    )
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
    pool_ids = _encode(tokenizer, pool.texts)
    eval_ids = {name: _encode(tokenizer, texts) for name, texts in evals.items()}
    lengths = np.asarray([len(i) for i in pool_ids])
    flat_target = np.concatenate(pool_ids) if lengths.sum() else np.zeros(0, dtype=np.int64)
    vocab = build_vocab(flat_target, [np.concatenate(e) for e in eval_ids.values()], student.get("max_vocab"))
    flat = vocab.encode(flat_target).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = lengths + 1  # each document is led by the separator
    eval_data = {
        name: ([vocab.encode(i) for i in eval_ids[name]], sum(len(t.encode("utf-8")) for t in evals[name]))
        for name in evals
    }
    timings["tokenize_s"] = time.perf_counter() - t0

    # Arms and their rows for every seed: all capacity problems surface here, before Ray starts.
    keep = pool_lib.filters_mask(pool, filters.get("thresholds"), filters.get("quantile_bands"))
    with_filters = cfg.filters_arm is True or (cfg.filters_arm == "auto" and not keep.all())
    halves = cfg.halves if isinstance(cfg.halves, str) else list(cfg.halves or [])
    arm_list = arm_lib.build_arms(
        _plain(cfg.arms),
        halves,
        _plain(cfg.bands),
        _plain(cfg.weighted),
        bool(cfg.length_stratified),
        with_filters,
        pool.columns,
    )
    bins = arm_lib.length_bins(tokens, int(cfg.length_bins))
    chosen = {
        (arm.name, seed): arm_lib.select(arm, tokens, pool.columns, budget, seed, keep, bins)
        for arm in arm_list
        for seed in range(seeds)
    }
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

    with connect(OmegaConf.to_container(cfg.cluster, resolve=True), bool(filters.get("allow_network"))):
        # One Ray task per arm x seed.
        t0 = time.perf_counter()
        task = ray.remote(train_and_evaluate).options(
            num_cpus=float(cfg.resources.num_cpus), num_gpus=float(cfg.resources.num_gpus)
        )
        shared = [ray.put(flat), ray.put(offsets)]
        evals_ref = ray.put(eval_data)
        # A rerun of the same config reuses every finished arm x seed (runs.jsonl, appended as they finish).
        keys = {
            (arm.name, seed): _run_key(chosen[(arm.name, seed)], budget, student, vocab, eval_data, filters)
            for arm in arm_list
            for seed in range(seeds)
        }
        finished = _finished(out / "runs.jsonl", set(keys.values()))
        results = [finished[k] for k in keys.values() if k in finished]
        # Seed-major order: the first seed of every arm finishes first.
        pending = [
            task.remote(arm.name, seed, chosen[(arm.name, seed)], *shared, budget, evals_ref, vocab, student)
            for seed in range(seeds)
            for arm in arm_list
            if keys[(arm.name, seed)] not in finished
        ]
        if results:
            log.info(
                "probe: %d of %d arm x seed runs reused from %s", len(results), len(keys), out / "runs.jsonl"
            )
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            r = ray.get(done[0])
            r["key"] = keys[(r["arm"], r["seed"])]
            with open(out / "runs.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(r) + "\n")
            results.append(r)
            scores = ", ".join(f"{k} {v:.4f}" for k, v in r["bpb"].items())
            log.info(
                "probe: %d/%d  %s seed %d: %s bits/byte (%.0f s, %.0f tok/s)",
                len(results),
                len(arm_list) * seeds,
                r["arm"],
                r["seed"],
                scores,
                r["train_s"] + r["eval_s"],
                r["tokens_per_s"],
            )
        timings["train_eval_s"] = time.perf_counter() - t0

    timings["total_s"] = time.perf_counter() - started
    context = {
        "pool": {
            "source": source,
            "files": len(pool.files),
            "rows_read": rows_read,
            "rows_overlapping_eval": int(overlap.sum()),
            "rows": len(pool.texts),
            "tokens": int(tokens.sum()),
            "group_column": pool.group_column,
        },
        "eval_sets": {
            name: {
                "docs": len(evals[name]),
                "bytes": eval_data[name][1],
                "tokens": int(sum(map(len, eval_ids[name]))),
            }
            for name in evals
        },
        "vocab": {"size": vocab.size, "distinct": vocab.distinct, "rare_members": vocab.rare_members},
        "load_avg": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    result = report.build(arm_list, chosen, tokens, pool, results, budget, seeds, context)
    report.write(out, result)
    return result


def _run_key(
    rows: np.ndarray, budget: int, student: dict, vocab: Vocab, eval_data: dict, filters: dict
) -> str:
    """What one arm x seed's result depends on: its rows, the budget, the student, the vocabulary,
    the evaluation sets and the tokenizer."""
    h = xxhash.xxh3_64()
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    h.update(vocab.table.tobytes())
    for name, (docs, n_bytes) in sorted(eval_data.items()):
        h.update(f"{name}:{n_bytes}:{sum(len(d) for d in docs)}".encode())
    h.update(json.dumps([budget, student, str(filters.get("tokenizer"))], sort_keys=True).encode())
    return h.hexdigest()


def _finished(path, wanted: set[str]) -> dict[str, dict]:
    """Results of an earlier run of the same arms, by key (a torn last line is ignored)."""
    found = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("key") in wanted:
                found[r["key"]] = r
    return found


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _encode(tokenizer, texts: list[str], batch: int = 1024) -> list[np.ndarray]:
    ids = []
    for i in range(0, len(texts), batch):
        ids += [np.asarray(x, dtype=np.int64) for x in tokenizer.encode(texts[i : i + batch])]
    return ids
