"""Teacher decode speed: transformers ``generate()`` against the fast engine, same model, same run.

No Ray, no Hydra: torch + transformers only, so it runs as is on a bare GPU machine. The model
is the SmolLM2-135M shape with random weights (speed does not depend on the weights) unless
``--model DIR`` names a real model directory. Every row decodes exactly ``--new-tokens`` tokens
(EOS is ignored), so both sides do the same work; tok/s counts generated tokens over the wall
time of the whole call, prefill included. Greedy agreement is the share of rows whose first 64
generated tokens are identical on both sides (random bf16 weights have near-tied logits, so a
real model agrees more). With ``--sample`` both sides sample with litho's default settings
(temperature 0.7, top-p 0.9, repetition penalty 1.1): ``generate()`` through transformers' own
warpers, the engine through litho's sampler (generators/teachers/sampling.py).

``--dtype-agreement N`` instead measures what bf16 does to a real model's greedy text: the first N
plan prompts of the default textbook generator (needs Hydra: not for the bare GPU machine), greedy
``generate()`` in fp32 and in bf16, share of rows whose first 64 tokens are identical and the mean
length of the identical prefix.

    python bench/bench_teacher.py                      # GPU: batches 64, 256, 1024
    python bench/bench_teacher.py --quick              # CPU smoke run
    python bench/bench_teacher.py --mixed 256          # continuous batching on/off, mixed lengths
    python bench/bench_teacher.py --dtype-agreement 32 --model embedded:smollm2   # CPU: bf16 vs fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators.teachers.fast.engine import FastEngine  # noqa: E402
from generators.teachers.models import materialize, resolve, resolve_dtype  # noqa: E402
from tests.helpers.random_models import random_model  # noqa: E402

SAMPLED = dict(temperature=0.7, top_p=0.9, repetition_penalty=1.1)  # conf/teacher/sampling/default.yaml


def load(args, dtype_name: str | None = None) -> torch.nn.Module:
    dtype, _ = resolve_dtype(dtype_name or args.dtype, args.device, "--dtype")
    if args.model:
        from transformers import AutoModelForCausalLM

        where = materialize(resolve(args.model, "--model"))
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    else:
        model = random_model(args.shape, seed=args.seed)
    model = model.to(device=args.device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # fixed output length on both sides
    return model


def make_prompts(n: int, mean_len: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(mean_len // 2, mean_len * 3 // 2 + 1, (n,), generator=g)
    return [torch.randint(0, vocab, (int(k),), generator=g).tolist() for k in lens]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_hf(model, prompts: list[list[int]], new_tokens: int, device: str, sample: bool = False):
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as HFTeacher does
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
    ids, mask = ids.to(device), mask.to(device)
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            **(dict(do_sample=True, **SAMPLED) if sample else dict(do_sample=False)),
        )
    sync(device)
    return time.perf_counter() - start, out[:, width:].tolist()


def run_fast(engine: FastEngine, prompts, new_tokens: int, device: str, limits=None, sample=False):
    sync(device)
    start = time.perf_counter()
    results = engine.generate(prompts, limits or new_tokens, **(SAMPLED if sample else {}))
    sync(device)
    return time.perf_counter() - start, [r.tokens for r in results]


def agreement(a: list[list[int]], b: list[list[int]], n: int = 64) -> float:
    return sum(x[:n] == y[:n] for x, y in zip(a, b, strict=True)) / len(a)


def compare(model, args) -> list[dict]:
    rows = []
    vocab = model.config.vocab_size
    for batch in args.batches:
        prompts = make_prompts(batch, args.prompt_len, vocab, args.seed + batch)
        engine = FastEngine(
            model,
            max_batch=batch,
            max_seq_len=2 * args.prompt_len + args.new_tokens,
            use_cuda_graphs=not args.no_graphs,
        )
        run_fast(engine, prompts, args.new_tokens, args.device, sample=args.sample)  # warm-up: graph capture
        fast_s, fast_tokens = run_fast(engine, prompts, args.new_tokens, args.device, sample=args.sample)
        run_hf(model, prompts[: min(batch, 8)], 4, args.device)  # warm-up
        hf_s, hf_tokens = run_hf(model, prompts, args.new_tokens, args.device, sample=args.sample)
        generated = batch * args.new_tokens
        assert all(len(t) == args.new_tokens for t in fast_tokens), "fast rows must decode the fixed length"
        rows.append(
            dict(
                batch=batch,
                hf_tok_s=generated / hf_s,
                hf_ms_step=1000 * hf_s / args.new_tokens,
                fast_tok_s=generated / fast_s,
                fast_ms_step=1000 * fast_s / args.new_tokens,
                ratio=hf_s / fast_s,
                greedy_agree_64=float("nan")
                if args.sample
                else agreement(hf_tokens, fast_tokens, min(64, args.new_tokens)),
                graphs=engine.stats["graphs"],
            )
        )
        print_row(rows[-1])
    return rows


def mixed(model, args) -> list[dict]:
    """Four times more requests than slots, output lengths uniform in [16, new_tokens]."""
    batch, rows = args.mixed, []
    n = 4 * batch
    prompts = make_prompts(n, args.prompt_len, model.config.vocab_size, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    limits = torch.randint(min(16, args.new_tokens), args.new_tokens + 1, (n,), generator=g).tolist()
    for refill in (False, True):
        engine = FastEngine(model, max_batch=batch, max_seq_len=2 * args.prompt_len + args.new_tokens, refill=refill,
                            use_cuda_graphs=not args.no_graphs)  # fmt: skip
        run_fast(engine, prompts, args.new_tokens, args.device, limits)  # warm-up
        seconds, _ = run_fast(engine, prompts, args.new_tokens, args.device, limits)
        rows.append(dict(refill=refill, requests=n, slots=batch, tok_s=sum(limits) / seconds, seconds=seconds,
                         steps=engine.stats["steps"], prefills=engine.stats["prefills"]))  # fmt: skip
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()))
    return rows


def dtype_agreement(args) -> dict:
    """Greedy fp32 vs bf16 on the default plan's first ``args.dtype_agreement`` prompts (a real model)."""
    from hydra import compose, initialize_config_module
    from transformers import AutoTokenizer

    from pipeline.generate import build_generator

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[f"n={args.dtype_agreement}"])
    plan = build_generator(cfg).plan(int(cfg.n), int(cfg.seed))  # the plan's rows (a Plan is a Ray dataset)
    tok = AutoTokenizer.from_pretrained(materialize(resolve(args.model, "--model")))
    chats = [json.loads(row["prompt"]) for row in plan]
    prompts = [
        list(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)["input_ids"])
        for c in chats
    ]
    out, n = {}, 64
    for name in ("float32", "bfloat16"):
        model = load(args, name)
        seconds, out[name] = run_hf(model, prompts, n, args.device)
        print(f"# {name}: {len(prompts)} x {n} greedy tokens in {seconds:.1f} s", flush=True)
    pairs = list(zip(out["float32"], out["bfloat16"], strict=True))
    prefix = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), n) for a, b in pairs]
    result = {
        "model": args.model,
        "prompts": len(prompts),
        "tokens": n,
        "identical_first_64": agreement(out["float32"], out["bfloat16"], n),
        "mean_identical_prefix": sum(prefix) / len(prefix),
        "token_agreement": sum(x == y for a, b in pairs for x, y in zip(a, b)) / (n * len(pairs)),
    }
    print(
        f"bf16 vs fp32 greedy, {result['prompts']} prompts: {result['identical_first_64']:.1%} of rows identical "
        f"over {n} tokens; identical prefix {result['mean_identical_prefix']:.1f} tokens on average; "
        f"{result['token_agreement']:.1%} of positions equal"
    )
    return result


def print_row(r: dict) -> None:
    print(
        f"{r['batch']:>6} {r['hf_tok_s']:>11,.0f} {r['hf_ms_step']:>9.2f} {r['fast_tok_s']:>11,.0f} "
        f"{r['fast_ms_step']:>9.2f} {r['ratio']:>7.1f}x {r['greedy_agree_64']:>8.1%} {r['graphs']:>6}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="64,256,1024", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens decoded per row (EOS ignored)")
    parser.add_argument("--prompt-len", type=int, default=32, help="mean prompt length (uniform +-50%%)")
    parser.add_argument("--shape", default="smollm2-135m", help="random-weight shape from fast_random.SHAPES")
    parser.add_argument("--model", default=None, help="a real model directory instead of random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--no-graphs", action="store_true", help="fast engine without CUDA graphs")
    parser.add_argument("--mixed", type=int, default=0, help="also time refill on/off with this many slots")
    parser.add_argument(
        "--sample", action="store_true", help="both sides sample with litho's default settings"
    )
    parser.add_argument(
        "--dtype-agreement", type=int, default=0, help="bf16 vs fp32 greedy on N plan prompts"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): CPU, batches 2,4, 8 new tokens",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.new_tokens, args.prompt_len = "2,4", 8, 16
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dtype_agreement:
        result = dtype_agreement(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    model = load(args)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {args.model or args.shape} on {name}, {next(model.parameters()).dtype}, torch {torch.__version__}, "
          f"{args.new_tokens} new tokens, prompts ~{args.prompt_len}, {'sampled' if args.sample else 'greedy'}")  # fmt: skip
    print(f"{'batch':>6} {'hf tok/s':>11} {'hf ms/st':>9} {'fast tok/s':>11} {'fast ms/st':>9} {'ratio':>8} "
          f"{'agree64':>8} {'graphs':>6}")  # fmt: skip
    results = {"args": vars(args), "device": name, "compare": compare(model, args)}
    if args.mixed:
        results["mixed"] = mixed(model, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
