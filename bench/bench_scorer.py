"""Scorer throughput: LMScorer (bits/byte + streamed attention metrics) against a plain forward pass.

No Ray, no Hydra. Same model, same windows of ``--seq-len`` tokens, same run, three timings:

* ``plain (sdpa)``  — ``model(ids, attention_mask)`` with the stock SDPA attention, no metrics;
* ``plain (eager)`` — the same with materialised attention probabilities, still no metrics;
* ``LMScorer``      — one scorer forward: eager-equivalent attention reduced to the metrics layer
  by layer, plus per-token NLL (what ``LMScorer.score`` runs per batch of windows);
* ``LMScorer (bits/byte only)`` — the same with ``metrics=[]`` (``filters.lm.metrics=[]``): SDPA
  attention and the per-token NLL only.

``--accuracy`` instead scores real text (Python's pydoc topics) with the scorer in float32 and in
bfloat16 and prints the error of every bf16 column against float32.

tokens/s counts real tokens per wall second (CUDA synchronised); variants run round-robin, medians
are reported. On a shared CPU, tokens per process-CPU-second (all threads) is the steadier figure,
best read with ``--threads 1``. The model is the real embedded
SmolLM2-135M when it is installed, else (or with ``--random``) the same shape with random weights;
the output says which. Speed does not depend on the weights.

    python bench/bench_scorer.py --quick          # CPU smoke run
    python bench/bench_scorer.py                  # CUDA when present: batch 64 x 512
    python bench/bench_scorer.py --threads 2 --dtype bfloat16
    python bench/bench_scorer.py --accuracy       # bf16 columns against fp32 on real text
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filters.scores.attention import compiled_reduce, reduce_layer  # noqa: E402
from filters.scores.lm_scores import LMScorer  # noqa: E402

SMOLLM2_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)


def random_model_dir(where: Path) -> str:
    """SmolLM2-135M's shape with random weights and a stand-in word-level tokenizer."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(where)
    vocab = {"<|endoftext|>": 0, **{f"t{i}": i for i in range(1, SMOLLM2_SHAPE["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(where)
    return str(where)


def pick_model(args, tmp: Path) -> tuple[str, str]:
    if not args.random:
        try:
            from generators.teachers.models import resolve

            resolve(args.model, "--model")
            return args.model, f"{args.model} (real weights)"
        except Exception as err:  # noqa: BLE001 - any failure means: fall back to the random shape
            print(f"# {args.model} unavailable ({err}); using random weights", flush=True)
    return random_model_dir(tmp), "SmolLM2-135M shape, random weights"


def run_once(model, variant, device: str) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call of a ``(attention implementation, fn)`` variant."""
    impl, fn = variant
    model.set_attn_implementation(impl)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def timed(model, variants: dict, device: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per variant, after one warm-up call each.

    Variants run round-robin so that load from other processes on a shared machine falls on all
    of them alike.
    """
    for variant in variants.values():
        run_once(model, variant, device)
    runs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, variant in variants.items():
            runs[name].append(run_once(model, variant, device))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {name: (median([w for w, _ in r]), median([c for _, c in r])) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--random", action="store_true", help="random weights of SmolLM2-135M's shape")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="windows per forward (default 64 CUDA, 4 CPU)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="also time LMScorer(compile_metrics=True): auto = on CUDA only",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): CPU, batch 2, 2 repeats"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--accuracy", action="store_true", help="bf16 columns against fp32 on real text")
    parser.add_argument("--write", action="store_true", help="append the table to bench/results/scorer.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    batch = args.batch_size or (2 if args.quick else 64 if device.startswith("cuda") else 4)
    repeats = 2 if args.quick else args.repeats

    if args.accuracy:
        return accuracy(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        spec, what = pick_model(args, Path(tmp))
        scorer = LMScorer(model=spec, device=device, dtype=args.dtype, max_len=args.seq_len, batch_size=batch)
        model = scorer.model
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(1, model.config.vocab_size, (batch, args.seq_len), generator=gen)
        ids[:, 0] = scorer.prefix
        windows = [(b, ids[b].tolist(), 1) for b in range(batch)]
        bpb_only = copy.copy(scorer)  # same model; metrics=[] as LMScorer(metrics=[]) sets it
        bpb_only.metrics = ()
        ids, mask = ids.to(device), torch.ones_like(ids, device=device)

        def plain():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)

        variants = {
            "plain (sdpa)": ("sdpa", plain),
            "plain (eager)": ("eager", plain),
            "LMScorer": ("litho_metrics", lambda: scorer._forward(windows, reduce=reduce_layer)),
            "LMScorer (bits/byte only)": ("sdpa", lambda: bpb_only._forward(windows)),
        }
        if args.compile == "on" or (args.compile == "auto" and device.startswith("cuda")):
            fused = compiled_reduce()
            variants["LMScorer+compile"] = ("litho_metrics", lambda: scorer._forward(windows, reduce=fused))
        tokens = batch * args.seq_len
        rows = [
            (name, tokens / wall, tokens / cpu)
            for name, (wall, cpu) in timed(model, variants, device, repeats).items()
        ]

    base = rows[0][1]
    name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {
        "device": name,
        "model": what,
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch": batch,
        "seq_len": args.seq_len,
        "load_avg_1min": round(load, 1),
        **{f"{n} tok/s": round(v, 1) for n, v, _ in rows},
        **{f"{n} tok/cpu-s": round(c, 1) for n, _, c in rows},
        **{f"{n} time / plain(sdpa)": round(base / v, 2) for n, v, _ in rows[2:]},
    }
    if args.json:
        print(json.dumps(result))
        return
    header = f"{name} | {what} | {result['dtype']} | batch {batch} x {args.seq_len} | load avg {load:.1f}"
    table = ["| variant | tokens/s | time vs plain (sdpa) | tokens/CPU-s |", "|---|---|---|---|"]
    table += [f"| {n} | {v:,.1f} | {base / v:.2f}x | {c:,.1f} |" for n, v, c in rows]
    print("# " + header)
    print("\n".join(table))
    if args.write:
        out = Path(__file__).resolve().parent / "results" / "scorer.md"
        out.parent.mkdir(exist_ok=True)
        command = "python bench/bench_scorer.py " + " ".join(sys.argv[1:])
        stamp = time.strftime("%Y-%m-%d %H:%M")
        with out.open("a") as f:
            f.write(f"\n```\n{command}\n{stamp}, {header}\n```\n\n" + "\n".join(table) + "\n")


def accuracy(args, device: str) -> None:
    """Max and mean absolute error of every bf16 column against fp32, on real text of 50-600 words."""
    from pydoc_data.topics import topics

    import numpy as np

    texts = [t for t in topics.values() if 50 <= len(t.split()) <= 600][: 16 if args.quick else 64]
    scored = {}
    for dtype in ("float32", "bfloat16"):
        if args.threads:
            torch.set_num_threads(args.threads)
        scorer = LMScorer(model=args.model, device=device, dtype=dtype, batch_size=args.batch_size or 8)
        scored[dtype] = scorer.score(texts)
    words = sum(len(t.split()) for t in texts)
    header = f"{args.model} | bf16 against fp32 | {len(texts)} pydoc topics, {words} words"
    table = ["| column | max abs error | mean abs error | fp32 mean |", "|---|---|---|---|"]
    for name, want in scored["float32"].items():
        error = np.abs(scored["bfloat16"][name] - want)
        table.append(
            f"| {name} | {np.nanmax(error):.2e} | {np.nanmean(error):.2e} | {np.nanmean(want):.4f} |"
        )
    print("# " + header)
    print("\n".join(table))
    if args.write:
        out = Path(__file__).resolve().parent / "results" / "scorer.md"
        command = "python bench/bench_scorer.py " + " ".join(sys.argv[1:])
        with out.open("a") as f:
            f.write(f"\n```\n{command}\n{time.strftime('%Y-%m-%d %H:%M')}, {header}\n```\n\n")
            f.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
