"""Student-probe benchmark: student training speed at the default size, and the whole default
``make probe`` (``litho probe`` with conf/probe.yaml as it ships) against its 15-minute target.

    flock /tmp/litho-bench.lock python bench/bench_probe.py [--quick] [--warm] [--write]

1. *Student*: one student of the default shape (conf/probe.yaml ``student:``, vocabulary
   ``student.max_vocab``) trained on ``budget_tokens`` of real text (this machine's /usr/share/doc
   prose) with the probe's loop (pipeline/probe/student.py: bf16 autocast where the CPU has AMX or
   AVX512-BF16), against the baseline: the same model and batches in a plain fp32 loop (HF forward
   with labels, AdamW, nothing else), both for the first ``--baseline-steps`` steps, in this run.
2. *Default probe*: ``litho probe`` as a subprocess with the shipped defaults (builtin pool,
   arms, seeds, budget); by default with an empty ``LITHO_CACHE`` (a fresh clone: the built-in pool
   is gathered and scored first), ``--warm`` reuses ``$LITHO_CACHE``. Seconds per arm x seed come
   from its probe.json; the wall time is compared with the 900 s target.

Writes bench/results/probe.json and, with ``--write``, appends a table to bench/results/probe.md.
``--quick`` (a smoke run, not the target) writes neither: a tiny student, 2 seeds, a small built-in pool.
The machine is shared: the load average is printed next to every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TARGET_S = 900.0
# --quick: the student section at two default-shape steps; the probe with a tiny student on a small pool
QUICK_STUDENT_TOKENS = 8192
QUICK_PROBE = [
    "seeds=2",
    "budget_tokens=16000",
    "builtin.max_chars=300000",
    "student.hidden_size=64",
    "student.layers=2",
    "student.intermediate_size=256",
    "student.seq_len=128",
    "student.max_vocab=2048",
    "student.batch_size=8",
    "eval.builtin=[pydoc]",
    "eval.max_chars=40000",
]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _defaults() -> dict:
    from omegaconf import OmegaConf

    from tests.pipeline.conftest import compose

    return OmegaConf.to_container(compose(config_name="probe"), resolve=True)


def _stream(budget: int, max_vocab: int, tokenizer: str):
    """``budget`` tokens of real text in compact ids (documents led by the separator) and the vocab size."""
    from filters.tokenizers import load_target_tokenizer
    from pipeline.probe import corpus
    from pipeline.probe.student import build_vocab

    tok = load_target_tokenizer(tokenizer)
    texts = [d["text"] for d in corpus.documents("doc", "pool", max_chars=budget * 6)]
    ids = [np.asarray(x) for x in tok.encode(texts)]
    vocab = build_vocab(np.concatenate(ids), [], max_vocab)
    stream = np.concatenate([np.concatenate([[0], vocab.encode(i)]) for i in ids])[:budget]
    return stream, vocab.size


def _plain_fp32(stream: np.ndarray, vocab_size: int, cfg, steps: int, seed: int) -> float:
    """Tokens/s of the baseline: the same model and batches, plain fp32 forward/backward/AdamW."""
    import torch

    from pipeline.probe.student import build_student

    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    model = build_student(vocab_size, cfg, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    blocks = torch.from_numpy(stream[: len(stream) // cfg.seq_len * cfg.seq_len].astype(np.int64)).view(
        -1, cfg.seq_len
    )
    started = time.perf_counter()
    for b in range(steps):
        batch = blocks[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - started)


def bench_student(defaults: dict, budget: int, baseline_steps: int) -> dict:
    from pipeline.probe.student import StudentConfig, parameter_count, train_student

    cfg = StudentConfig.from_dict(defaults["student"])
    stream, vocab_size = _stream(budget, cfg.max_vocab, defaults["filters"]["tokenizer"])
    load_start = _load()
    short = stream[: baseline_steps * cfg.batch_size * cfg.seq_len]
    _, probe_short = train_student(short, vocab_size, cfg, seed=0)
    plain = _plain_fp32(short, vocab_size, cfg, baseline_steps, seed=0)
    _, full = train_student(stream, vocab_size, cfg, seed=0)
    return {
        "parameters": parameter_count(vocab_size, cfg),
        "vocab": vocab_size,
        "dtype": full["dtype"],
        "threads": cfg.threads,
        "budget_tokens": budget,
        "train_s": full["train_s"],
        "tokens_per_s": full["tokens_per_s"],
        "baseline_steps": baseline_steps,
        "probe_loop_tokens_per_s": probe_short["tokens_per_s"],
        "plain_fp32_tokens_per_s": round(plain, 1),
        "speed_vs_plain_fp32": round(probe_short["tokens_per_s"] / plain, 2),
        "load": f"{load_start} -> {_load()}",
    }


def bench_default_probe(overrides: list[str], warm: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="litho-bench-probe-") as tmp:
        return _default_probe(Path(tmp), overrides, warm)


def _default_probe(out: Path, overrides: list[str], warm: bool) -> dict:
    env = dict(os.environ)
    if not warm:
        env["LITHO_CACHE"] = str(out / "cache")
    litho = Path(sys.executable).with_name("litho")
    command = [str(litho), "probe", f"output.dir={out / 'probe'}", *overrides]
    load_start = _load()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"litho probe failed with exit {proc.returncode}")
    report = json.loads((out / "probe" / "probe.json").read_text())
    runs = report["runs"]
    per_run = [r["train_s"] + r["eval_s"] for r in runs]
    return {
        "command": " ".join(["litho probe", *overrides]) + ("" if warm else "   (empty LITHO_CACHE)"),
        "wall_s": round(wall, 1),
        "target_s": TARGET_S,
        "wall_vs_target": round(wall / TARGET_S, 2),
        "arms": len(report["arms"]),
        "seeds": report["seeds"],
        "budget_tokens": report["budget_tokens"],
        "pool_rows": report["pool"]["rows"],
        "timings_s": report["timings_s"],
        "s_per_arm_seed_mean": round(float(np.mean(per_run)), 1),
        "s_per_arm_seed_max": round(float(np.max(per_run)), 1),
        "student_tokens_per_s_mean": round(float(np.mean([r["tokens_per_s"] for r in runs])), 1),
        "load": f"{load_start} -> {_load()}",
        "summary": proc.stdout.strip().splitlines()[-40:],
    }


def _markdown(result: dict) -> str:
    s, p = result["student"], result["probe"]
    lines = [
        "",
        "```",
        result["command"],
        f"{result['date']}, {os.cpu_count()} CPUs",
        "```",
        "",
        "| student | params | vocab | dtype | threads | tokens | train s | tokens/s | probe loop vs plain fp32 (first steps) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| default | {s['parameters']:,} | {s['vocab']} | {s['dtype']} | {s['threads']} | {s['budget_tokens']:,} | "
        f"{s['train_s']} | {s['tokens_per_s']:,} | {s['probe_loop_tokens_per_s']:,} vs {s['plain_fp32_tokens_per_s']:,} "
        f"tok/s = {s['speed_vs_plain_fp32']}x |",
        "",
        f"load average (1, 5, 15 min) during the student run: {s['load']}",
        "",
        "| default probe | arms x seeds | budget | wall s | vs 900 s target | s per arm x seed (mean / max) | student tok/s | pool, eval+tokenize, train s |",
        "|---|---|---|---|---|---|---|---|",
        f"| `{p['command']}` | {p['arms']} x {p['seeds']} | {p['budget_tokens']:,} | {p['wall_s']} | {p['wall_vs_target']}x | "
        f"{p['s_per_arm_seed_mean']} / {p['s_per_arm_seed_max']} | {p['student_tokens_per_s_mean']:,} | "
        f"{p['timings_s'].get('read_s')}, {p['timings_s'].get('tokenize_s')}, {p['timings_s'].get('train_eval_s')} |",
        "",
        f"load average during the probe: {p['load']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 8,192-token student run; the probe with a tiny student, "
        "2 seeds, 16k tokens, a 300k-character pool; no write",
    )
    parser.add_argument("--warm", action="store_true", help="reuse $LITHO_CACHE (the scored built-in pool)")
    parser.add_argument(
        "--baseline-steps", type=int, default=20, help="steps timed for the loop-vs-plain ratio"
    )
    parser.add_argument("--write", action="store_true", help="append the table to bench/results/probe.md")
    parser.add_argument("--probe-args", default="", help="extra litho probe overrides (space-separated)")
    args = parser.parse_args()
    defaults = _defaults()
    budget = QUICK_STUDENT_TOKENS if args.quick else int(defaults["budget_tokens"])
    overrides = (QUICK_PROBE if args.quick else []) + args.probe_args.split()
    result = {
        "command": "python bench/bench_probe.py " + " ".join(a for a in sys.argv[1:]),
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "student": bench_student(defaults, budget, min(args.baseline_steps, budget // 4096 or 1)),
    }
    print(json.dumps(result["student"], indent=2), flush=True)
    result["probe"] = bench_default_probe(overrides, args.warm)
    print("\n".join(result["probe"].pop("summary")))
    print(json.dumps(result["probe"], indent=2))
    print(_markdown(result))
    if args.quick:  # a smoke run: bench/results keeps the measured sizes
        return
    results = ROOT / "bench" / "results"
    (results / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        path = results / "probe.md"
        if not path.exists():
            path.write_text(
                "# Student-probe benchmark\n\nAppended by `flock /tmp/litho-bench.lock python bench/bench_probe.py "
                "--write`. The machine is shared (load averages beside each run).\n"
            )
        with path.open("a") as handle:
            handle.write(_markdown(result))


if __name__ == "__main__":
    main()
