"""Structured output with the real embedded teacher: parse yield before/after, and the grammar's cost.

1. The ``layered`` generator (seed texts from Python's pydoc_data, all four layers) and the
   ``instruct`` generator (one turn), each run twice with the same plan and seed: line-based /
   free-text answers (``generator.structured=false``, the parser that was there before) and JSON
   answers held to their schema while decoding (``generator.structured=true``, the default).
   Reported: rows kept, drop reasons, and per layer the share of rows where it parsed.
2. The grammar's cost per token: the same annotation requests answered by the hf teacher in this
   process with and without the schema (greedy), seconds per generated token of each.

    python bench/bench_structured.py                 # writes bench/results/structured.md
    python bench/bench_structured.py --n 4 --max-new-tokens 64 --no-write   # a quick look
    python bench/bench_structured.py --quick        # smoke run: 1 row, 24 new tokens, 1 cost request

Run it under ``flock /tmp/litho-bench.lock``; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = ("terms", "claims", "steps", "relations")
RUNS = {
    "layered": ["generator=layered", "generator.seed_file={seeds}", "generator.max_words=120"],
    "instruct": ["generator=instruct", "output=sft", "generator.turns=1"],
}


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def seeds(work: Path) -> Path:
    from pydoc_data.topics import topics  # clean English prose that ships with Python

    texts = [topics[k] for k in sorted(topics) if len(topics[k].split()) > 150][:12]
    path = work / "seeds.parquet"
    pq.write_table(pa.table({"text": texts, "doc_id": [f"pydoc-{i}" for i in range(len(texts))]}), path)
    return path


def rows(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def run_variant(name: str, structured: bool, args, work: Path, seed_file: Path) -> dict:
    out = work / f"{name}-{'json' if structured else 'lines'}"
    overrides = [o.format(seeds=seed_file) for o in RUNS[name]] + [
        f"generator.structured={str(structured).lower()}",
        f"n={args.n}",
        f"teacher.sampling.max_new_tokens={args.max_new_tokens}",
        "filters.min_words=5",
        "filters.lm=null",
        f"output.dir={out}",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{name} structured={structured} failed:\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    generated = rows(next((out / ".litho" / "generations").iterdir()))
    result = {
        "seconds": round(time.perf_counter() - started, 1),
        "planned": manifest["counts"]["planned"],
        "kept": manifest["counts"]["kept"],
        "dropped": manifest["dropped_by_reason"],
        "completion_tokens": int(sum(r["completion_tokens"] for r in generated)),
    }
    if name == "layered":
        result["parsed"] = {
            layer: sum(r[f"n_{layer}"] > 0 for r in generated) / max(1, len(generated)) for layer in LAYERS
        }
        result["items"] = {
            layer: sum(r[f"n_{layer}"] for r in generated) / max(1, len(generated)) for layer in LAYERS
        }
    else:
        result["turns"] = sum(r["n_turns"] >= 1 for r in generated) / max(1, len(generated))
        users = [json.loads(r["messages"])[0]["content"] for r in generated if r["n_turns"] >= 1]
        result["asks"] = sum(u.rstrip().endswith("?") for u in users) / max(1, len(users))
        result["user_words"] = sum(len(u.split()) for u in users) / max(1, len(users))
    return result


def grammar_cost(args, seed_file: Path) -> dict:
    """Seconds per generated token of the same annotation requests with and without their schema."""
    import torch

    from generators.prompts.layered import annotate_messages, layer_schema
    from generators.teachers import structure
    from generators.teachers.contract import Request
    from generators.teachers.hf import HFTeacher
    from generators.teachers.structure import Structure

    torch.set_num_threads(2)
    masked = {"seconds": 0.0, "row_tokens": 0}
    call = structure.GrammarMask.__call__

    def timed(self, input_ids, scores):  # the mask's own time, inside generate()
        started = time.perf_counter()
        out = call(self, input_ids, scores)
        masked["seconds"] += time.perf_counter() - started
        masked["row_tokens"] += len(self.live)
        return out

    structure.GrammarMask.__call__ = timed
    texts = pq.read_table(seed_file).column("text").to_pylist()[: args.cost_requests]
    body = [" ".join(t.split()[:120]) for t in texts]
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0}
    teacher = HFTeacher("embedded:smollm2", device="cpu", threads=2, batch_size=len(body), sampling=sampling)
    cost = {}
    for label, structured in (("free", False), ("schema", True)):
        requests = [
            Request(
                f"cost-{i}",
                tuple(annotate_messages(b, "terms", structured=True)),
                Structure.json(layer_schema("terms", 12)) if structured else None,
            )
            for i, b in enumerate(body)
        ]
        teacher.generate(requests[:1])  # warm-up (and the llguidance tokenizer, built once per teacher)
        masked.update(seconds=0.0, row_tokens=0)
        started = time.perf_counter()
        out = teacher.generate(requests)
        seconds = time.perf_counter() - started
        tokens = sum(c.completion_tokens for c in out)
        cost[label] = {
            "seconds": seconds,
            "tokens": tokens,
            "ms_per_token": 1000 * seconds / max(1, tokens),
            "valid": sum(c.invalid is None for c in out),
        }
        if structured:
            cost[label]["mask_s"] = masked["seconds"]
            cost[label]["mask_us_per_row_token"] = 1e6 * masked["seconds"] / max(1, masked["row_tokens"])
        masked.update(seconds=0.0, row_tokens=0)  # the warm-up's share is not counted
    return cost


def table(results: dict, cost: dict, args, started_load: str) -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"`python bench/bench_structured.py --n {args.n} --max-new-tokens {args.max_new_tokens}` at "
        f"{commit.stdout.strip()}; embedded:smollm2 teacher (fp32, the default sampling), 2 CPUs; load average "
        f"before {started_load}, after {load()}.",
        "",
        "| generator | answers | rows kept | drops | "
        + " | ".join(f"{layer} parsed" for layer in LAYERS)
        + " | s |",
        "|---|---|---|---|" + "---|" * len(LAYERS) + "---|",
    ]
    for key, r in results.items():
        name, mode = key.split("@")
        drops = ", ".join(f"{k} {v}" for k, v in sorted(r["dropped"].items()) if v) or "-"
        if name == "layered":
            parsed = " | ".join(
                f"{r['parsed'][layer]:.0%} ({r['items'][layer]:.1f} items)" for layer in LAYERS
            )
        else:
            parsed = (
                f"user turn {r['turns']:.0%} | a question: {r['asks']:.0%} | {r['user_words']:.1f} words | -"
            )
        lines.append(
            f"| {name} | {mode} | {r['kept']} of {r['planned']} | {drops} | {parsed} | {r['seconds']} |"
        )
    free, schema = cost["free"], cost["schema"]
    lines += [
        "",
        f"Grammar cost, hf teacher in this process, {args.cost_requests} `terms` requests in one batch, greedy, "
        f"{args.max_new_tokens} new tokens at most: free text {free['ms_per_token']:.1f} ms per generated token "
        f"({free['tokens']} tokens, {free['seconds']:.1f} s), with the schema {schema['ms_per_token']:.1f} ms "
        f"({schema['tokens']} tokens, {schema['seconds']:.1f} s, {schema['valid']} of {args.cost_requests} valid). "
        "The two do not generate the same tokens (a schema answer is shorter, so fewer rows share the later "
        "steps), so the mask's own time is the cost: "
        f"{schema['mask_s']:.2f} s of the {schema['seconds']:.1f} s ({schema['mask_s'] / schema['seconds']:.1%}), "
        f"{schema['mask_us_per_row_token']:.0f} µs per row and token.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8, help="rows per run")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--only", default="layered,instruct")
    parser.add_argument("--cost-requests", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 1 row per run, 24 new tokens, 1 cost request, no write",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens, args.cost_requests, args.no_write = 1, 24, 1, True
    started_load = load()
    with tempfile.TemporaryDirectory(prefix="litho-bench-structured-") as tmp:
        work = Path(tmp)
        seed_file = seeds(work)
        results = {}
        for name in args.only.split(","):
            for structured in (False, True):
                key = f"{name}@{'JSON + schema' if structured else 'lines (before)'}"
                results[key] = run_variant(name, structured, args, work, seed_file)
                print(key, json.dumps(results[key]), flush=True)
        cost = grammar_cost(args, seed_file)
    print(json.dumps(cost), flush=True)
    text = table(results, cost, args, started_load)
    print(text)
    if not args.no_write:
        target = ROOT / "bench" / "results" / "structured.md"
        head = (
            ""
            if target.exists()
            else "# Structured output with the embedded teacher (bench/bench_structured.py)\n\n"
        )
        with target.open("a") as f:
            f.write(head + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
