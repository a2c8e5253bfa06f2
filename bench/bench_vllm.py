"""teacher=vllm in litho's pipeline against vLLM's own offline ``LLM.generate`` and Ray Data LLM's processor.

The same default-plan prompts (``generator=textbook``, seed 0, varied lengths), the same sampling
(litho's defaults: temperature 0.7, top-p 0.9, repetition penalty 1.1, a seed per request) and
``--new-tokens`` at most, on the same engine settings, each in a process of its own:

* ``litho``: ``litho generate teacher=vllm filters.lm=null``: the streaming teacher stage (vLLM's
  ``AsyncLLM``, several batches in flight); tok/s = completion tokens over the span of its checkpoint
  groups (the report's teacher throughput: engine start excluded, checkpoints included);
* ``llm``: one ``vllm.LLM.generate`` call over every prompt (vLLM's upper bound), engine start excluded;
* ``raydata``: ``ray.data.llm`` (``vLLMEngineProcessorConfig``, ``build_processor``) over the same
  prompts; tok/s = completion tokens over the processor's wall time minus the ``llm`` engine start.

Ratios are litho over each baseline, measured in the same run. Needs vLLM: runs in .venv-vllm
(`make install-vllm`); started from another venv it re-runs itself there.

    .venv-vllm/bin/python bench/bench_vllm.py --write                       # 256 prompts, 512 tokens
    .venv-vllm/bin/python bench/bench_vllm.py --prompts 2 --new-tokens 8 --enforce-eager  # smallest (tests)
    python bench/bench_vllm.py --quick      # that size with vLLM here; without it, the dry run of that size
    bash bench/gpu_check.sh                                                # on a GPU: --gpu
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "vllm.md"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
MODES = ("litho", "llm", "raydata")


def sampling(new_tokens: int) -> dict:
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/teacher/sampling/default.yaml"))
    return {**out, "seed": 0, "max_new_tokens": new_tokens}


def plan(n: int) -> list[tuple[str, list[dict]]]:
    """The first ``n`` requests of the default plan: ``(request id, chat messages)``."""
    from hydra import compose, initialize_config_module

    from pipeline.generate import build_generator

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[f"n={n}", "seed=0"])
    return [(r["id"], json.loads(r["prompt"])) for r in build_generator(cfg).plan(n, 0)]


def engine(gpu: bool, eager: bool = False) -> dict:
    """Engine settings of every mode: the VLLMTeacher's for this device (``eager``: no torch.compile)."""
    from generators.teachers.vllm import VLLMTeacher

    class Settings(VLLMTeacher):
        def _launch(self) -> None:  # the constructor's settings, no engine
            self._loop = None

    settings = Settings("embedded:smollm2", num_gpus=1 if gpu else 0, max_model_len=2048, enforce_eager=eager)
    return dict(settings.engine_args)


def run_llm(n: int, new_tokens: int, gpu: bool, eager: bool = False) -> dict:
    from vllm import LLM
    from vllm import SamplingParams as VSamplingParams

    from generators.teachers.contract import SamplingParams
    from generators.teachers.vllm import sampling_kwargs

    requests, sp = plan(n), SamplingParams.from_config(sampling(new_tokens))
    started = time.perf_counter()
    llm = LLM(**engine(gpu, eager))
    start_s = time.perf_counter() - started
    tok = llm.get_tokenizer()
    rendered = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True) for _, m in requests]
    prompts = [{"prompt_token_ids": list(r["input_ids"] if hasattr(r, "keys") else r)} for r in rendered]
    params = [VSamplingParams(**sampling_kwargs(sp, rid)) for rid, _ in requests]
    began = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - began
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"start_s": start_s, "seconds": seconds, "tokens": tokens}


def run_raydata(n: int, new_tokens: int, gpu: bool, eager: bool = False) -> dict:
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from generators.teachers.contract import SamplingParams
    from generators.teachers.vllm import sampling_kwargs

    requests, sp = plan(n), SamplingParams.from_config(sampling(new_tokens))
    args = engine(gpu, eager)
    model = args.pop("model")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    # On the CPU the engine's placement group must not ask for a GPU (Ray Data LLM's default bundle does).
    placement = None if gpu else {"bundles": [{"CPU": 1}]}
    config = vLLMEngineProcessorConfig(model_source=model, engine_kwargs=args, batch_size=32, concurrency=1,
                                       max_concurrent_batches=8, placement_group_config=placement)  # fmt: skip
    processor = build_processor(
        config,
        preprocess=lambda row: {"messages": row["messages"], "sampling_params": row["sampling"]},
        postprocess=lambda row: {"tokens": len(row.get("generated_tokens") or [])},
    )
    rows = [{"messages": m, "sampling": sampling_kwargs(sp, rid)} for rid, m in requests]
    began = time.perf_counter()
    out = processor(ray.data.from_items(rows)).take_all()
    return {"seconds_with_start": time.perf_counter() - began, "tokens": sum(r["tokens"] for r in out)}


def run_litho(n: int, new_tokens: int, gpu: bool, eager: bool = False) -> dict:
    from pipeline.output.report_teacher import teacher_batches

    with tempfile.TemporaryDirectory(prefix="litho-bench-vllm-") as tmp:
        out = Path(tmp) / "run"
        overrides = ["teacher=vllm", f"n={n}", f"teacher.sampling.max_new_tokens={new_tokens}", "filters.lm=null",
                     "teacher.max_model_len=2048", f"cluster.teacher_gpus={1 if gpu else 0}",
                     "filters.min_words=1", f"output.dir={out}", f"teacher.enforce_eager={str(eager).lower()}"]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "generate", *overrides], cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - began
        if done.returncode:
            raise SystemExit(f"litho failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        manifest = json.loads((out / "manifest.json").read_text())
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(out / "config.yaml"))
        summary = teacher_batches(out, config, manifest)["summary"]
        return {"wall_s": wall, "seconds": summary["span_s"], "tokens": summary["tokens"]}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {list(MODES)}")
    parser.add_argument("--gpu", action="store_true", help="one GPU per engine (bench/gpu_check.sh)")
    parser.add_argument(
        "--enforce-eager",
        action="store_true",
        help="every engine without torch.compile and CUDA graphs: starts in seconds, decodes slower (tests)",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"append the table to {RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument("--dry-run", action="store_true", help="plan and settings of every mode, no engine")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 2 prompts, 8 new tokens, eager engines, no write; "
        "in an interpreter without vLLM, the dry run of that size (exit 0)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.new_tokens, args.enforce_eager, args.write = 2, 8, True, False
        # Without vLLM in this interpreter: the dry run of that size, not a rerun in .venv-vllm
        if not args.one and not args.dry_run and importlib.util.find_spec("vllm") is None:
            print(
                "bench_vllm --quick: vLLM is not installed in this interpreter; the dry run of what it runs:"
            )
            args.dry_run = True
    if args.one:
        run = {"litho": run_litho, "llm": run_llm, "raydata": run_raydata}[args.one]
        result = run(args.prompts, args.new_tokens, args.gpu, args.enforce_eager)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    missing = [m for m in ("hydra", "ray", "xxhash") if not _importable(m)]
    if missing:  # the GPU machine of bench/gpu_check.sh has torch and transformers only
        print(
            f"bench_vllm: skipped: litho's dependencies {missing} are not installed here (pip install -e .[vllm])"
        )
        return 0
    if args.dry_run:  # bench/gpu_check.sh --dry-run: the script's wiring, without vLLM
        requests = plan(args.prompts)
        lengths = sorted(sum(len(m["content"]) for m in msgs) for _, msgs in requests)
        print(f"bench_vllm dry run: {len(requests)} prompts ({lengths[0]}-{lengths[-1]} characters), modes "
              f"{args.modes}, engine {engine(args.gpu, args.enforce_eager)}, sampling {sampling(args.new_tokens)}")  # fmt: skip
        return 0
    try:
        import vllm
    except ImportError:
        if VLLM_PY.is_file() and Path(sys.prefix).resolve() != VLLM_PY.parents[1].resolve():
            return subprocess.call([str(VLLM_PY), *sys.argv])
        print("bench_vllm: vLLM is not installed; run `make install-vllm` first (skipped)")
        return 0
    before = os.getloadavg()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    results, failed = {}, []
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--one", mode, "--prompts", str(args.prompts),
                   "--new-tokens", str(args.new_tokens)] + (["--gpu"] if args.gpu else [])  # fmt: skip
        command += ["--enforce-eager"] if args.enforce_eager else []
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        found = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not found:
            print(f"{mode} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}", file=sys.stderr)
            failed.append(mode)
            continue
        results[mode] = json.loads(found[-1][len("RESULT ") :])
        print(f"{mode}: {results[mode]}", flush=True)
    if "raydata" in results:  # its engine starts inside the processor: take the llm mode's start off
        r = results["raydata"]
        r["seconds"] = r["seconds_with_start"] - results.get("llm", {}).get("start_s", 0.0)
    rates = {m: r["tokens"] / r["seconds"] for m, r in results.items() if r.get("seconds")}
    cpu = cpu_model()
    header = (
        f"`{Path(sys.executable).parent.parent.name}/bin/python bench/bench_vllm.py {' '.join(sys.argv[1:])}` — "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {'GPU' if args.gpu else cpu}, vllm {vllm.__version__}, "
        f"load {before[0]:.1f} -> {os.getloadavg()[0]:.1f}; {args.prompts} default-plan prompts, "
        f"{args.new_tokens} new tokens at most, default sampling"
        + (", engines eager (no torch.compile)" if args.enforce_eager else "")
    )
    lines = ["| mode | tokens | seconds | tok/s | litho / this |", "|---|---|---|---|---|"]
    for mode, r in results.items():
        ratio = f"{rates['litho'] / rates[mode]:.2f}" if "litho" in rates and mode in rates else "-"
        lines.append(f"| {mode} | {r['tokens']} | {r['seconds']:.1f} | {rates.get(mode, 0):.1f} | {ratio} |")
    block = f"{header}\n\n" + "\n".join(lines) + ("\n\nfailed: " + ", ".join(failed) if failed else "") + "\n"
    print("\n" + block)
    if args.write:
        with RESULTS.open("a") as f:
            f.write("\n" + block)
    return 1 if failed else 0


if __name__ == "__main__":  # vLLM's engine starts its workers with `spawn`: this guard is required
    sys.exit(main())
