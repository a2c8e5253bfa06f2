"""The default `make generate` end to end, next to a plain ``generate()`` and a plain forward, same run.

One command, three measurements on the same machine, one after another (never overlapping):

1. ``litho generate`` with the default config (32 requests, embedded SmolLM2 teacher and scorer)
   into a fresh output directory, model cache warm: wall time, the teacher's own tok/s (the
   ``generate()`` calls inside the actor, as each checkpoint file records their seconds), the LM scorer's tok/s (its stage
   seconds from the manifest over the tokens it scored) and where the rest of the time goes.
   With ``--before REF`` the same run is made first from ``git archive REF`` (e.g. ``main``), with
   the same venv, so the table has a before and an after column.
2. A plain ``model.generate()`` of the same 32 prompts in this process: batch 32, the same sampling
   settings through transformers' own warpers, 256 new tokens, in the dtype the teacher resolves to
   here (``--plain-dtypes`` adds others). tok/s counts tokens up to each row's EOS, as the pipeline's does.
3. A plain forward of the windows the LM scorer saw (the scored texts of run 1, tokenized by the
   scorer's tokenizer with its prefix token, batches of ``filters.lm.batch_size``), no metrics.

    python bench/bench_default_run.py                  # after only
    python bench/bench_default_run.py --before main    # before -> after, writes bench/results/default_run.md
    python bench/bench_default_run.py --before main --plain-dtypes auto,float32 --in-process
                                                       # + fp32 plain baseline, litho's classes without Ray
    python bench/bench_default_run.py --variant teacher=fast   # one more 'after' column per variant

Run it under ``flock /tmp/litho-bench.lock`` on a shared machine; the load average is recorded.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run_pipeline(repo: Path, out: Path, overrides: list[str]) -> dict:
    """``litho generate`` from ``repo`` into ``out``; the manifest plus the measured wall and teacher calls."""
    env = dict(os.environ, PYTHONPATH=str(repo), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    command = [sys.executable, "-m", "pipeline.cli", "generate", f"output.dir={out}", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(
            f"{' '.join(command)} failed in {repo}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    for line in done.stderr.splitlines():  # the live progress lines, as a job log shows them
        if line.startswith("teacher: "):
            print(f"# progress: {line}", flush=True)
    calls = teacher_calls(out)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": wall, "teacher_calls": calls, "manifest": manifest, "out": out}


def teacher_calls(out: Path) -> list[tuple[float, float, float]]:
    """(rows, completion tokens, seconds) of every teacher batch: the timing each checkpoint file
    records (pipeline/checkpoint.py) and its rows' completion tokens."""
    import pyarrow.parquet as pq

    from pipeline.checkpoint import batch_timing

    calls = []
    for path in sorted(out.glob(".litho/generations/*/block=*/gen-*.parquet")):
        timing = batch_timing(path)
        tokens = pq.read_table(path, columns=["completion_tokens"]).column("completion_tokens").to_pylist()
        if timing:
            calls.append((float(len(tokens)), float(sum(tokens)), float(timing["seconds"])))
    return calls


def scored_texts(out: Path) -> list[str]:
    """Texts the LM scorer scored (a bits-per-byte value), kept or dropped after it."""
    import pyarrow.parquet as pq

    texts = []
    for path in sorted(out.glob("data/*.parquet")) + sorted(out.glob("rejected/*.parquet")):
        table = pq.read_table(path, columns=["text", "bits_per_byte_v1"]).to_pylist()
        texts += [r["text"] for r in table if r["bits_per_byte_v1"] == r["bits_per_byte_v1"]]  # not NaN
    return texts


def summarize(run: dict) -> dict:
    m, calls = run["manifest"], run["teacher_calls"]
    timings = m["timings_s"]
    stages = {s["name"]: s["seconds"] for s in m["stages"]}
    teacher_s, teacher_tokens = sum(c[2] for c in calls), sum(c[1] for c in calls)
    scored = scored_texts(run["out"])
    return {
        "wall_s": run["wall_s"],
        "generate_phase_s": timings.get("generate_s", float("nan")),
        "teacher_call_s": teacher_s,
        "teacher_tokens": teacher_tokens,
        "teacher_tok_s": teacher_tokens / teacher_s if teacher_s else float("nan"),
        "score_filter_dedup_s": timings.get("score_filter_dedup_s", float("nan")),
        "lm_scores_s": stages.get("lm_scores", float("nan")),
        "scored_texts": len(scored),
        "write_s": timings.get("write_s", float("nan")),
        "stages": stages,
        "kept": m["counts"]["kept"],
        "rows": m["counts"]["rows_in"],
        "startup_and_shutdown_s": run["wall_s"] - timings.get("total_s", 0.0),
        # The live progress's first line with tokens > 0, in seconds from the start of generation.
        "first_tokens_s": m.get("teacher_usage", {}).get("first_tokens_s", float("nan")),
        "texts": scored,
    }


def plan_prompts(overrides: list[str]) -> tuple[list[list[dict]], dict, dict]:
    """The default plan's chat prompts, the teacher config and the scorer config."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from pipeline.generate import build_generator

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    plan = build_generator(cfg).plan(int(cfg.n), int(cfg.seed))  # the plan's rows (a Plan is a Ray dataset)
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    lm = OmegaConf.to_container(cfg.filters.lm, resolve=True)
    return [(r["id"], json.loads(r["prompt"])) for r in plan], teacher, lm


def in_process(plan, teacher: dict, target: str) -> dict:
    """litho's teacher class (hf or fast) on the same requests in this process: no Ray, same settings."""
    from hydra.utils import instantiate

    from generators.teachers.contract import Request
    from generators.teachers.stream import split_config

    config = dict(split_config(teacher)[0], _target_=target)
    if target.endswith("FastTeacher"):
        config.setdefault("max_batch", 256)
    built = instantiate(config, _convert_="all")
    requests = [Request(rid, tuple(messages)) for rid, messages in plan]
    built.generate(requests[:2])  # warm-up
    started = time.perf_counter()
    done = built.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for c in done)
    name = target.rsplit(".", 1)[-1]
    return {
        "name": name,
        "dtype": str(built.model.dtype).replace("torch.", ""),
        "s": seconds,
        "tokens": tokens,
    }


def plain_generate(prompts, teacher: dict, dtype: str) -> dict:
    """One ``model.generate()`` call over every prompt, transformers' own sampling; tokens up to EOS."""
    import torch

    from generators.teachers.models import load_causal_lm, set_threads

    set_threads(0)
    model, tok = load_causal_lm(
        teacher["model"], "teacher.model", "cpu", dtype, cache_dir=teacher.get("cache_dir")
    )
    ids = [
        list(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True)["input_ids"])
        for p in prompts
    ]
    batch = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    sp = teacher["sampling"]
    eos = model.generation_config.eos_token_id
    eos = sorted({*([eos] if isinstance(eos, int) else list(eos or [])), tok.eos_token_id})
    kwargs = dict(max_new_tokens=sp["max_new_tokens"], pad_token_id=tok.pad_token_id, eos_token_id=eos)
    if sp["temperature"] > 0:
        kwargs.update(
            do_sample=True, temperature=sp["temperature"], top_p=sp["top_p"], top_k=sp["top_k"] or None
        )
    kwargs["repetition_penalty"] = sp["repetition_penalty"]
    torch.manual_seed(0)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, pad_token_id=tok.pad_token_id)  # warm-up
        started = time.perf_counter()
        out = model.generate(**batch, **kwargs)
        seconds = time.perf_counter() - started
    new = out[:, batch["input_ids"].shape[1] :].tolist()
    tokens = sum(next((j for j, t in enumerate(row) if t in eos), len(row)) for row in new)
    dtype = str(model.dtype).replace("torch.", "")
    return {"dtype": dtype, "batch": len(prompts), "s": seconds, "tokens": tokens, "tok_s": tokens / seconds}


def windows_of(tok, texts: list[str], width: int) -> list[list[int]]:
    """The scorer's windows of ``texts``: its prefix token then up to ``width`` text tokens each."""
    prefix = tok.convert_tokens_to_ids("<|endoftext|>")
    windows = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        windows += [[prefix, *ids[i : i + width]] for i in range(0, max(len(ids), 1), width)]
    return sorted(windows, key=len)


def plain_forward(runs: dict[str, dict], lm: dict) -> dict:
    """A plain forward (SDPA, no metrics) of the last run's scorer windows, in its dtype and batch size;
    sets every run's ``scored_tokens`` (window tokens its LM scorer saw)."""
    import torch

    from generators.teachers.models import load_causal_lm, set_threads

    set_threads(0)
    model, tok = load_causal_lm(
        lm["model"], "filters.lm.model", "cpu", lm["dtype"], cache_dir=lm.get("cache_dir")
    )
    for r in runs.values():
        r["scored_tokens"] = sum(map(len, windows_of(tok, r["texts"], lm["max_len"] - 1)))
    windows = windows_of(tok, list(runs.values())[-1]["texts"], lm["max_len"] - 1)
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    batches = []
    for i in range(0, len(windows), lm["batch_size"]):
        b = windows[i : i + lm["batch_size"]]
        n = max(map(len, b))
        ids = torch.tensor([w + [pad] * (n - len(w)) for w in b])
        mask = torch.tensor([[1] * len(w) + [0] * (n - len(w)) for w in b])
        batches.append((ids, mask))
    with torch.inference_mode():
        model(input_ids=batches[0][0][:1, :8])  # warm-up
        started = time.perf_counter()
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)
        seconds = time.perf_counter() - started
    tokens = sum(map(len, windows))
    return {
        "dtype": str(model.dtype).replace("torch.", ""),
        "s": seconds,
        "tokens": tokens,
        "tok_s": tokens / seconds,
    }


def table(runs: dict[str, dict], plain: list[dict], forward: dict) -> str:
    """One column per pipeline run; the plain baselines (measured once, same run) as ratio rows."""
    rows = [
        ("wall time, `litho generate` (s)", lambda r: f"**{r['wall_s']:.1f}**"),
        ("  startup + shutdown: imports, config, Ray (s)", lambda r: f"{r['startup_and_shutdown_s']:.1f}"),
        (
            "  generation phase: actor start, model load, generate, checkpoints (s)",
            lambda r: f"{r['generate_phase_s']:.1f}",
        ),
        ("    of which the teacher's generate() calls (s)", lambda r: f"{r['teacher_call_s']:.1f}"),
        ("  score, filter, dedup (s)", lambda r: f"{r['score_filter_dedup_s']:.1f}"),
        ("    of which LM scorer batches, summed in its worker (s)", lambda r: f"{r['lm_scores_s']:.1f}"),
        ("  write shards (s)", lambda r: f"{r['write_s']:.1f}"),
        (
            "teacher tokens / rows kept of generated",
            lambda r: f"{r['teacher_tokens']:.0f} / {r['kept']} of {r['rows']}",
        ),
        ("**teacher tok/s** (its generate() calls)", lambda r: f"**{r['teacher_tok_s']:.0f}**"),
        ("first progress line with tokens > 0 (s into generation)", lambda r: f"{r['first_tokens_s']:.1f}"),
    ]
    for p in plain:
        if "name" not in p:  # the whole run against one plain generate() of the same prompts
            rows.append((f"**wall time / plain `model.generate()`, {p['dtype']}** ({p['s']:.1f} s)",
                         lambda r, p=p: f"**{r['wall_s'] / p['s']:.2f}x**"))  # fmt: skip
    for p in plain:
        p["tok_s"] = p["tokens"] / p["s"]
        what = f"`{p['name']}.generate()` in this process" if "name" in p else "plain `model.generate()`"
        rows.append(
            (
                f"  / {what}, {p['dtype']} ({p['tok_s']:.0f} tok/s)",
                lambda r, p=p: f"{r['teacher_tok_s'] / p['tok_s']:.2f}x",
            )
        )
    rows += [
        (
            "LM scorer tok/s (scored window tokens / its seconds)",
            lambda r: f"{forward['tokens'] / r['lm_scores_s']:.0f}",
        ),
        (
            f"  / plain forward {forward['dtype']} ({forward['tok_s']:.0f} tok/s)",
            lambda r: f"{forward['tokens'] / r['lm_scores_s'] / forward['tok_s']:.2f}x",
        ),
    ]
    lines = ["| | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(cell(r) for r in runs.values()) + " |" for label, cell in rows]
    notes = [
        f"`{p['name']}.generate()`: litho's teacher class with the run's teacher config, the same requests, "
        f"in this process without Ray: {p['tokens']} tokens in {p['s']:.1f} s, {p['dtype']}"
        if "name" in p
        else f"plain `model.generate()`: the same {p['batch']} prompts in one call, transformers' sampling with "
        f"the same settings, {p['tokens']} tokens (to EOS) in {p['s']:.1f} s, {p['dtype']}"
        for p in plain
    ]
    notes.append(
        f"plain forward: the {forward['tokens']} window tokens the last column's LM scorer saw (prefix token "
        f"included), same batches, SDPA, no metrics, {forward['s']:.1f} s, {forward['dtype']}"
    )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--before", default=None, help="git ref to run first as the 'before' column (e.g. main)"
    )
    parser.add_argument(
        "--plain-dtypes", default="auto", help="dtypes of the plain generate() baseline, e.g. auto,float32"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not append to bench/results/default_run.md"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra overrides for one more 'after' run, e.g. --variant 'teacher=fast' (repeatable)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="also time litho's HFTeacher and FastTeacher on the same requests in this process (no Ray)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 4 texts, 32 tokens, no write",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs (default: none)")
    args = parser.parse_args()
    if args.quick:
        # 32 tokens make fewer words than filters.min_words: every row would be too_short, dropped unscored
        args.overrides += ["n=4", "teacher.sampling.max_new_tokens=32", "filters.min_words=5"]
        args.no_write = True
    load_before = load()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="litho-bench-") as tmp:
        tmp = Path(tmp)
        from generators.teachers.models import materialize, resolve

        materialize(resolve("embedded:smollm2"))  # warm model cache, outside every timing
        if args.before:
            before = tmp / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
            sha = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True, text=True
            ).stdout.strip()
            print(f"# before: {args.before} ({sha})", flush=True)
            runs[f"before ({args.before} {sha})"] = summarize(
                run_pipeline(before, tmp / "out-before", args.overrides)
            )
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        name = f"after ({head}{'+dirty' if dirty else ''})"
        print(f"# {name}", flush=True)
        runs[name] = summarize(run_pipeline(ROOT, tmp / "out-after", args.overrides))
        for i, variant in enumerate(args.variant):
            print(f"# {name} {variant}", flush=True)
            extra = variant.split()
            runs[f"{name} {variant}"] = summarize(
                run_pipeline(ROOT, tmp / f"out-v{i}", args.overrides + extra)
            )
        plan, teacher, lm = plan_prompts(args.overrides)
        plain = [plain_generate([m for _, m in plan], teacher, d) for d in args.plain_dtypes.split(",")]
        if args.in_process:
            targets = ("generators.teachers.hf.HFTeacher", "generators.teachers.fast.FastTeacher")
            plain += [in_process(plan, teacher, t) for t in targets]
        forward = plain_forward(runs, lm)
    load_after = load()
    command = "python bench/bench_default_run.py " + " ".join(sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = table(runs, plain, forward)
    header = f"`{command}` — {stamp}, {cpu_model()}, {os.cpu_count()} CPUs, load average (1/5/15 min) before {load_before}, after {load_after}"
    print(header + "\n\n" + text)
    for n, r in runs.items():
        print(f"# {n}: stage seconds {json.dumps(r['stages'])}")
    if not args.no_write:
        out = ROOT / "bench" / "results" / "default_run.md"
        if not out.exists():
            out.write_text("# Default run: `litho generate` end to end (bench/bench_default_run.py)\n")
        with out.open("a") as f:
            f.write(f"\n## {stamp}\n\n{header}\n\n{text}")


if __name__ == "__main__":
    main()
