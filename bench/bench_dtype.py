"""What ``dtype=auto`` choosing bf16 on this CPU does to the embedded teacher and scorer, against fp32.

Three measurements in one run, one after another (never overlapping), embedded SmolLM2-135M-Instruct:

1. **Greedy agreement**: the first ``--prompts`` prompts of the default plan (textbook generator),
   one plain ``generate()`` call each in fp32 and bf16, greedy, ``--tokens`` new tokens (EOS
   suppressed, so every row has that many): share of rows whose tokens are all identical, mean
   length of the identical prefix, share of positions equal.
2. **Batch invariance of sampled texts**: litho's ``HFTeacher`` with the default sampling config on
   the first ``--invariance`` requests, ``batch_size`` 1 and ``batch_size`` = all of them, in fp32
   and bf16: how many texts are identical between the two batch sizes (per-request draws make
   them equal unless the logits themselves round differently with the batch shape).
3. **Score tolerance**: ``LMScorer`` in fp32 and bf16 on ``--texts`` real texts (Python's pydoc
   topics, 2,500 characters each, as tests/conftest.py's ``real_texts``): the largest absolute
   difference of every score column, and the spread of bits per byte across the texts.

    python bench/bench_dtype.py            # appends a section to bench/results/teacher.md
    python bench/bench_dtype.py --quick    # 8 prompts, 4 texts: a smoke run (--no-write implied)

Run it under ``flock /tmp/litho-bench.lock`` on a shared machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_teacher import agreement, run_hf  # noqa: E402

from generators.teachers.models import load_causal_lm, set_threads  # noqa: E402

MODEL = "embedded:smollm2"


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def default_plan(n: int) -> tuple[list[tuple[str, list[dict]]], dict]:
    """The default config's first ``n`` plan rows as (id, chat) and its teacher sampling config."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from pipeline.generate import build_generator

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[f"n={n}"])
    plan = build_generator(cfg).plan(int(cfg.n), int(cfg.seed))  # the plan's rows (a Plan is a Ray dataset)
    sampling = OmegaConf.to_container(cfg.teacher.sampling, resolve=True)
    return [(row["id"], json.loads(row["prompt"])) for row in plan], sampling


def greedy_agreement(plan, tokens: int) -> dict:
    out, seconds = {}, {}
    for dtype in ("float32", "bfloat16"):
        model, tok = load_causal_lm(MODEL, "teacher.model", "cpu", dtype)
        prompts = [
            list(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"])
            for _, chat in plan
        ]
        seconds[dtype], out[dtype] = run_hf(model, prompts, tokens, "cpu")
        print(f"# greedy {dtype}: {len(prompts)} x {tokens} tokens in {seconds[dtype]:.1f} s", flush=True)
    pairs = list(zip(out["float32"], out["bfloat16"], strict=True))
    prefix = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), tokens) for a, b in pairs]
    return {
        "prompts": len(pairs),
        "tokens": tokens,
        "rows_identical": agreement(out["float32"], out["bfloat16"], tokens),
        "mean_identical_prefix": sum(prefix) / len(prefix),
        "positions_equal": sum(x == y for a, b in pairs for x, y in zip(a, b)) / (tokens * len(pairs)),
        "fp32_s": seconds["float32"],
        "bf16_s": seconds["bfloat16"],
    }


def batch_invariance(plan, sampling: dict, tokens: int) -> dict:
    from generators.teachers.contract import Request
    from generators.teachers.hf import HFTeacher

    requests = [Request(rid, tuple(chat)) for rid, chat in plan]
    sampling = dict(sampling, max_new_tokens=tokens)
    result = {"requests": len(requests), "tokens": tokens, "sampling": sampling}
    for dtype in ("float32", "bfloat16"):
        teacher = HFTeacher(MODEL, device="cpu", dtype=dtype, sampling=sampling)
        texts = {}
        for batch in (1, len(requests)):
            teacher.batch_size = batch
            texts[batch] = {c.id: c.text for c in teacher.generate(requests)}
        same = sum(texts[1][r.id] == texts[len(requests)][r.id] for r in requests)
        result[dtype] = same
        print(f"# sampled {dtype}: {same} of {len(requests)} texts identical at batch 1 and {len(requests)}")
    return result


def score_tolerance(n: int) -> dict:
    from pydoc_data.topics import topics

    from filters.scores.lm_scores import BPB, LMScorer

    texts = [topics[k] for k in sorted(topics) if len(topics[k].split()) > 150][:n]
    batch = {"text": np.array([t[:2500] for t in texts], dtype=object)}
    scores = {}
    for dtype in ("float32", "bfloat16"):
        started = time.perf_counter()
        # A fresh batch each: the scorer adds its columns to the dict it gets (in place), so sharing
        # one dict made both entries the bf16 columns and every delta 0.
        scorer = LMScorer(device="cpu", dtype=dtype, max_len=512, batch_size=8)
        scores[dtype] = scorer(dict(batch))
        print(f"# scores {dtype}: {len(texts)} texts in {time.perf_counter() - started:.1f} s", flush=True)
    deltas = {}
    for column in scores["float32"]:
        fp32 = np.asarray(scores["float32"][column])
        if column == "text" or fp32.dtype.kind not in "fiu":
            continue
        bf16 = np.asarray(scores["bfloat16"][column], dtype=float)
        deltas[column] = float(np.nanmax(np.abs(fp32.astype(float) - bf16)))
    bpb = np.asarray(scores["float32"][BPB], dtype=float)
    return {"texts": len(texts), "max_abs_delta": deltas, "bpb_range": [float(bpb.min()), float(bpb.max())]}


def markdown(greedy: dict | None, invariance: dict | None, scores: dict | None) -> str:
    g, i, s = greedy, invariance, scores
    lines = ["| measurement | fp32 vs bf16 |", "|---|---|"]
    if g:
        lines += [
            f"| greedy, {g['prompts']} default-plan prompts x {g['tokens']} tokens: rows identical | "
            f"{g['rows_identical']:.1%} |",
            f"| greedy: mean identical prefix (tokens) | {g['mean_identical_prefix']:.1f} of {g['tokens']} |",
            f"| greedy: positions equal | {g['positions_equal']:.1%} |",
            f"| greedy: one generate() call, fp32 / bf16 (s) | {g['fp32_s']:.1f} / {g['bf16_s']:.1f} |",
        ]
    if i:
        lines += [
            f"| sampled (default sampling, {i['tokens']} tokens), texts identical at batch 1 and "
            f"{i['requests']}: fp32 | {i['float32']} of {i['requests']} |",
            f"| same, bf16 | {i['bfloat16']} of {i['requests']} |",
        ]
    if s:
        lines.append(
            f"| LMScorer on {s['texts']} pydoc texts: bits_per_byte_v1 range (fp32) | "
            f"{s['bpb_range'][0]:.3f} to {s['bpb_range'][1]:.3f} |"
        )
        lines += [
            f"| LMScorer max abs delta: `{c}` | {d:.4f} |" for c, d in sorted(s["max_abs_delta"].items())
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="greedy agreement: default-plan prompts")
    parser.add_argument("--tokens", type=int, default=64, help="greedy agreement: new tokens per row")
    parser.add_argument("--invariance", type=int, default=8, help="sampled batch invariance: requests")
    parser.add_argument("--invariance-tokens", type=int, default=64, help="sampled: new tokens per row")
    parser.add_argument("--texts", type=int, default=16, help="score tolerance: real texts")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 8 prompts, 4 requests, 4 texts, no write",
    )
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results/teacher.md")
    parser.add_argument("--parts", default="greedy,invariance,scores", help="which measurements to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.quick:
        args.prompts, args.tokens, args.invariance, args.invariance_tokens, args.texts = 8, 16, 4, 16, 4
        args.no_write = True
    set_threads(0)
    load_before = load()
    plan, sampling = default_plan(max(args.prompts, args.invariance))
    greedy = greedy_agreement(plan[: args.prompts], args.tokens) if "greedy" in parts else None
    invariance = (
        batch_invariance(plan[: args.invariance], sampling, args.invariance_tokens)
        if "invariance" in parts
        else None
    )
    scores = score_tolerance(args.texts) if "scores" in parts else None
    load_after = load()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    command = "python bench/bench_dtype.py " + " ".join(sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d %H:%M")
    header = (
        f"`{command}` at {head} — {stamp}, {os.cpu_count()} CPUs, torch {torch.__version__}, {MODEL}, "
        f"load average (1/5/15 min) before {load_before}, after {load_after}"
    )
    text = markdown(greedy, invariance, scores)
    print(header + "\n\n" + text)
    if not args.no_write:
        out = ROOT / "bench" / "results" / "teacher.md"
        if not out.exists():
            out.write_text(
                "# Teacher and scorer dtype on the CPU: bf16 against fp32 (bench/bench_dtype.py)\n"
            )
        with out.open("a") as f:
            f.write(f"\n## {stamp}\n\n{header}\n\n{text}")


if __name__ == "__main__":
    main()
