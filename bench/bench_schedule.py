"""Scheduling on a small machine: score after generation, or overlap the scorer with the teacher?

The default run's shape (the default config's plan, 32 requests, the embedded teacher with the config's
sampling and dtype, then the LM scorer with the config's ``filters.lm``: its metrics, IFD on each row's
request included, and its dtype), without Ray: the teacher and the scorer
each run in their own process, as they do in their own Ray actors, and texts go from one to the
other through a queue. Every variant starts both models from scratch (loads included, as in a run)
and is timed from its start to the last scored text:

* ``after``            today's pipeline: the teacher generates everything with all cores, then the
                       scorer starts (loads) and scores with all cores;
* ``after preloaded`` the same, but the scorer loads its model while the teacher generates;
* ``overlap bN T+S``   the teacher answers batches of N rows with T threads while the scorer scores
                       each finished batch with S threads (separate thread budgets).

    python bench/bench_schedule.py                 # 32 requests, the default config's dtypes and metrics
    python bench/bench_schedule.py --quick         # smoke run: 4 requests, 16 new tokens, 2 variants
    python bench/bench_schedule.py --write         # append the table to bench/results/schedule.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402


def plan(n: int, max_new_tokens: int) -> tuple[list[tuple[str, list]], dict, str, dict]:
    """The default config's requests, sampling settings, teacher dtype and LM scorer settings."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from pipeline.generate import build_generator

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[f"n={n}"])
    rows = build_generator(cfg).plan(int(cfg.n), int(cfg.seed))  # the plan's rows (a Plan is a Ray dataset)
    sampling = dict(cfg.teacher.sampling) | {"max_new_tokens": max_new_tokens}
    lm = OmegaConf.to_container(cfg.filters.lm, resolve=True) | {"cache_dir": cfg.filters.cache_dir}
    requests = [(row["id"], json.loads(row["prompt"])) for row in rows]
    return requests, sampling, str(cfg.teacher.dtype), lm


def teacher_worker(args, threads: int, batch: int, requests, sampling, texts, t0: float) -> None:
    from generators.teachers.contract import Request
    from generators.teachers.hf import HFTeacher

    teacher = HFTeacher(
        model=args.model, dtype=args.teacher_dtype, batch_size=batch, threads=threads, sampling=sampling
    )
    loaded = time.perf_counter() - t0
    busy = tokens = 0.0
    for i in range(0, len(requests), batch):
        start = time.perf_counter()
        done = teacher.generate([Request(rid, tuple(m)) for rid, m in requests[i : i + batch]])
        busy += time.perf_counter() - start
        tokens += sum(c.completion_tokens for c in done)
        texts.put(([c.text for c in done], [json.dumps(m) for _, m in requests[i : i + batch]]))
    texts.put({"teacher_load_s": loaded, "teacher_s": busy, "teacher_tokens": tokens})


def scorer_worker(args, load_threads: int, threads: int, texts, results, t0: float) -> None:
    import torch

    from filters.scores.lm_scores import LMScorer

    # The pipeline's scorer: the config's filters.lm, IFD after each row's request (pipeline/process.py).
    lm = args.lm | {"model": args.model, "threads": load_threads, "prompt_column": "prompt"}
    if args.scorer_dtype:
        lm["dtype"] = args.scorer_dtype
    scorer = LMScorer(**lm)
    out = {"scorer_ready_s": time.perf_counter() - t0, "scorer_s": 0.0, "scored_tokens": 0}
    torch.set_num_threads(threads)
    while True:
        item = texts.get()
        if isinstance(item, dict):
            break
        start = time.perf_counter()
        batch, prompts = item
        scorer.score(batch, prompts)
        out["scorer_s"] += time.perf_counter() - start
        out["scored_tokens"] += sum(len(x) for x in scorer.tok(batch, add_special_tokens=False)["input_ids"])
    results.put(out | item | {"wall_s": time.perf_counter() - t0})


def run_variant(args, variant: dict, requests, sampling) -> dict:
    ctx = mp.get_context("spawn")
    texts, results = ctx.Queue(), ctx.Queue()
    t0 = time.perf_counter()
    teacher = ctx.Process(
        target=teacher_worker,
        args=(args, variant["teacher_threads"], variant["batch"], requests, sampling, texts, t0),
    )
    scorer = ctx.Process(
        target=scorer_worker,
        args=(args, variant["load_threads"], variant["scorer_threads"], texts, results, t0),
    )
    teacher.start()
    if variant["after"]:  # the scorer process starts once the teacher's has finished
        teacher.join()
    scorer.start()
    out = results.get()
    teacher.join()
    scorer.join()
    return out


VARIANTS = {
    "after (today)": dict(after=True, teacher_threads=2, batch=32, load_threads=2, scorer_threads=2),
    "after preloaded": dict(after=False, teacher_threads=2, batch=32, load_threads=1, scorer_threads=2),
    "overlap b8 1+1": dict(after=False, teacher_threads=1, batch=8, load_threads=1, scorer_threads=1),
    "overlap b16 1+1": dict(after=False, teacher_threads=1, batch=16, load_threads=1, scorer_threads=1),
    "overlap b8 2+1": dict(after=False, teacher_threads=2, batch=8, load_threads=1, scorer_threads=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--teacher-dtype", default=None, help="the teacher's dtype (default: the config's)")
    parser.add_argument("--scorer-dtype", default=None, help="the scorer's dtype (default: the config's)")
    parser.add_argument("--n", type=int, default=32, help="requests (the default run: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 4 requests, 16 new tokens, the variants 'after (today)' "
        "and 'overlap b8 1+1' (unless --variants), no write",
    )
    parser.add_argument("--write", action="store_true", help="append the table to bench/results/schedule.md")
    args = parser.parse_args()
    if args.quick:
        args.n, args.max_new_tokens, args.write = 4, 16, False
        args.variants = args.variants or "after (today),overlap b8 1+1"
    args.variants = args.variants or ",".join(VARIANTS)
    requests, sampling, teacher_dtype, args.lm = plan(args.n, args.max_new_tokens)
    args.teacher_dtype = args.teacher_dtype or teacher_dtype
    load = [os.getloadavg()[0]]
    rows = []
    for name in args.variants.split(","):
        out = run_variant(args, VARIANTS[name], requests, sampling)
        load.append(os.getloadavg()[0])
        rows.append((name, out))
        print(f"# {name}: {json.dumps({k: round(v, 1) for k, v in out.items()})}", flush=True)
    base = rows[0][1]["wall_s"]
    header = (
        f"{cpu_model()}, {os.cpu_count()} cores | {args.model} | teacher {args.teacher_dtype}, scorer "
        f"{args.scorer_dtype or args.lm['dtype']} with metrics {args.lm['metrics']} | {args.n} requests x {args.max_new_tokens} "
        f"new tokens | load avg {min(load):.1f}-{max(load):.1f}"
    )
    table = [
        "| variant | wall s | vs first | teacher tok/s (busy) | scorer tok/s (busy) | scorer ready at s |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in rows:
        table.append(
            f"| {name} | {o['wall_s']:.1f} | {o['wall_s'] / base:.2f}x | "
            f"{o['teacher_tokens'] / o['teacher_s']:.0f} | {o['scored_tokens'] / max(o['scorer_s'], 1e-9):.0f} | "
            f"{o['scorer_ready_s']:.1f} |"
        )
    print("# " + header)
    print("\n".join(table))
    if args.write:
        out = ROOT / "bench" / "results" / "schedule.md"
        if not out.exists():
            out.write_text(
                "# Scheduling benchmark (teacher and scorer on a small machine)\n\n"
                "Appended by `python bench/bench_schedule.py --write`; see the script's docstring.\n"
            )
        command = "python bench/bench_schedule.py " + " ".join(sys.argv[1:])
        stamp = time.strftime("%Y-%m-%d %H:%M")
        with out.open("a") as f:
            f.write(f"\n```\n{command}\n{stamp}, {header}\n```\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
