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
from pipeline.probe.prepare import parallel_tasks, positive_int, positive_number, prepare
from pipeline.probe.student import SEPARATOR, StudentConfig, Vocab, evaluated_student

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
    model, stats = evaluated_student(stream, evals, vocab, cfg, seed)
    return {"arm": arm, "seed": seed, "docs": int(len(rows)), **stats}


def check(cfg: DictConfig) -> dict:
    """Every value a user can get wrong that needs no data; returns the student settings.

    Raises:
        ConfigError: the first bad key, as one line.
    """
    positive_int(cfg, "seeds")
    positive_int(cfg, "length_bins")
    positive_int(cfg, "decontaminate_ngram", 0)
    positive_int(cfg, "max_repeats")
    positive_number(cfg, "target_difference")
    positive_number(cfg, "power.noise_exponent")
    positive_number(cfg, "power.gpu_flops")
    student = OmegaConf.to_container(cfg.student, resolve=True)
    for key in ("hidden_size", "layers", "heads", "intermediate_size", "seq_len", "batch_size", "epochs"):
        positive_int(cfg, f"student.{key}")
    positive_int(cfg, "student.threads", 0)
    positive_int(cfg, "student.average_last")
    if student["hidden_size"] % student["heads"]:
        raise ConfigError(
            f"student.heads={student['heads']}: must divide student.hidden_size={student['hidden_size']}"
        )
    if student.get("max_vocab") is not None:
        positive_int(cfg, "student.max_vocab", 2)
    if student["dtype"] not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"student.dtype={student['dtype']}: use auto, bf16 or fp32")
    if not (student["device"] in ("auto", "cpu") or str(student["device"]).startswith("cuda")):
        raise ConfigError(f"student.device={student['device']}: use auto, cpu or cuda")
    positive_int(cfg, "budget_tokens", student["seq_len"])
    if cfg.filters_arm not in ("auto", True, False):
        raise ConfigError(f"filters_arm={cfg.filters_arm}: use auto, true or false")
    for key in ("num_cpus", "num_gpus"):
        value = cfg.resources[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"resources.{key}={value}: give a number >= 0")
    positive_int(cfg, "eval.max_chars")
    return student


def run_probe(cfg: DictConfig) -> dict:
    """Run the probe of a composed ``conf/probe.yaml``; return the report (also written as probe.json).

    Raises:
        ConfigError: bad config or input, before any student trains.
    """
    import ray

    from pipeline import validate
    from pipeline.cluster import connect
    from pipeline.probe import report

    started = time.perf_counter()
    load_before = os.getloadavg()
    student = check(cfg)
    out = validate.check_common(cfg)  # output dir, target tokenizer, cluster mode
    p = prepare(cfg, student)  # pool, eval sets, tokens, vocabulary, every arm's rows: no Ray yet
    timings = p.timings
    arm_list, chosen, budget, seeds, vocab, filters = (
        p.arm_list,
        p.chosen,
        p.budget,
        p.seeds,
        p.vocab,
        p.filters,
    )

    with connect(OmegaConf.to_container(cfg.cluster, resolve=True), bool(filters.get("allow_network"))):
        # One Ray task per arm x seed.
        t0 = time.perf_counter()
        task = ray.remote(train_and_evaluate).options(
            num_cpus=float(cfg.resources.num_cpus), num_gpus=float(cfg.resources.num_gpus)
        )
        shared = [ray.put(p.flat), ray.put(p.offsets)]
        evals_ref = ray.put(p.eval_data)
        # A rerun of the same config reuses every finished arm x seed (runs.jsonl, appended as they finish).
        keys = {
            (arm.name, seed): _run_key(chosen[(arm.name, seed)], budget, student, vocab, p.eval_data, filters)
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
    pool = p.pool
    context = {
        "pool": {
            "source": p.source,
            "files": len(pool.files),
            "rows_read": p.rows_read,
            "rows_overlapping_eval": p.overlap,
            "rows": len(pool.texts),
            "tokens": int(p.tokens.sum()),
            "group_column": pool.group_column,
        },
        "eval_sets": {
            name: {
                "docs": len(p.evals[name]),
                "bytes": p.eval_data[name][1],
                "tokens": int(sum(map(len, p.eval_ids[name]))),
            }
            for name in p.evals
        },
        "vocab": {"size": vocab.size, "distinct": vocab.distinct, "rare_members": vocab.rare_members},
        "load_avg": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "parallel": parallel_tasks(float(cfg.resources.num_cpus)),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    result = report.build(arm_list, chosen, p.tokens, pool, results, budget, seeds, context)
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
