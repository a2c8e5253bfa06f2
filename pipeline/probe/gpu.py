"""The probe on a GPU machine with torch and transformers only (no Ray, Hydra, datasets or network):
train every arm x seed of a pack (pipeline/probe/pack.py) one after another, seed by seed, and write
the same statistics ``litho probe`` prints, with the measured speed and what the whole plan needs.

    python -m pipeline.probe.gpu --pack runs/gpu-pack --out runs/gpu-probe [--time-limit 300]

Each finished student is appended to ``runs.jsonl``; a rerun with the same pack and output skips them.
``--time-limit`` stops starting students whose expected end lies past it (the table then covers the
seeds that finished for every arm), so the run fits one call of bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from pipeline.probe import power, stats
from pipeline.probe.student import SEPARATOR, StudentConfig, Vocab, evaluated_student, parameter_count, stream


def decompress(path: Path) -> bytes:
    """A zstd file's bytes, by whichever decoder this machine has: the ``zstandard`` package, Python
    3.14's ``compression.zstd``, the ``zstd`` program or pyarrow (the pack's header names the size)."""
    data = path.read_bytes()
    try:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=2**31)
    except ImportError:
        pass
    try:
        from compression import zstd  # Python >= 3.14

        return zstd.decompress(data)
    except ImportError:
        pass
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    try:
        import pyarrow as pa  # here, where packs are built
    except ImportError:
        raise SystemExit(
            f"gpu probe: error: no zstd decoder for {path}: pip install zstandard, or install the zstd program"
        ) from None

    size = json.loads((path.parent / "pack.json").read_text())["raw_bytes"]
    return pa.decompress(data, decompressed_size=size, codec="zstd", asbytes=True)


def load(pack: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a pack directory."""
    meta = json.loads((pack / "pack.json").read_text())
    with np.load(io.BytesIO(decompress(pack / "pack.npz.zst"))) as npz:
        return meta, {k: npz[k] for k in npz.files}


def _split(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[offsets[i] : offsets[i + 1]].astype(np.int64) for i in range(len(offsets) - 1)]


def run(pack: Path, out: Path, time_limit: float | None = None, device: str | None = None) -> dict:
    """Train the pack's students (seed-major), then compare them; returns the report (also probe-gpu.json)."""
    started = time.perf_counter()
    meta, a = load(pack)
    student = dict(meta["student"], **({"device": device} if device else {}))
    cfg = StudentConfig.from_dict(student)
    v = meta["vocab"]
    vocab = Vocab(np.zeros(1, dtype=np.int32), v["size"], v["rare_id"], v["rare_members"], v["size"])
    evals = {
        name: (_split(a[f"eval_{name}_ids"], a[f"eval_{name}_offsets"]), info["bytes"])
        for name, info in meta["eval_sets"].items()
    }
    flat, offsets = a["pool_ids"].astype(np.int32), a["pool_offsets"]
    rows = _split(a["rows"], a["rows_offsets"])
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "runs.jsonl"
    done = (
        [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.exists() else []
    )
    finished = {(r["arm"], r["seed"]) for r in done}
    order = sorted(
        range(len(meta["runs"])), key=lambda i: (meta["runs"][i][1], meta["arms"].index(meta["runs"][i][0]))
    )
    per_student: list[float] = []
    stopped = None
    for i in order:
        arm, seed = meta["runs"][i]
        if (arm, seed) in finished:
            continue
        expected = float(np.mean(per_student)) if per_student else 0.0
        if time_limit and time.perf_counter() - started + expected > time_limit:
            stopped = f"stopped at the {time_limit:.0f} s limit before {arm} seed {seed}"
            break
        t0 = time.perf_counter()
        tokens = stream(rows[i], flat, offsets, meta["budget_tokens"], SEPARATOR)
        _, result = evaluated_student(tokens, evals, vocab, cfg, seed)
        per_student.append(time.perf_counter() - t0)
        record = {"arm": arm, "seed": seed, "docs": len(rows[i]), **result}
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        done.append(record)
        print(f"gpu probe: {arm} seed {seed}: {record['bpb']} ({per_student[-1]:.1f} s)", flush=True)
    report = compare(meta, done, stopped, time.perf_counter() - started)
    (out / "probe-gpu.json").write_text(json.dumps(report, indent=1))
    (out / "probe-gpu.md").write_text(table(report))
    return report


def compare(meta: dict, done: list[dict], stopped: str | None, seconds: float) -> dict:
    """Statistics over the seeds every arm finished, the measured speed and the plan."""
    complete = [
        s
        for s in range(meta["seeds"])
        if all((a, s) in {(r["arm"], r["seed"]) for r in done} for a in meta["arms"])
    ]
    results = [r for r in done if r["seed"] in complete]
    report = {"pack": meta, "seeds_complete": complete, "stopped": stopped, "seconds": round(seconds, 1)}
    if not done:
        return report
    report["tokens_per_s"] = float(np.mean([r["tokens_per_s"] for r in done]))
    report["device"] = done[0]["device"]
    if len(complete) < 2:
        return report
    report["stats"] = {name: stats.compare(results, name) for name in meta["eval_sets"]}
    run = {
        "arms": len(meta["arms"]),
        "parallel": 1,
        "train_s": float(np.mean([r["train_s"] for r in results])),
        "eval_s": float(np.mean([r["eval_s"] for r in results])),
        "parameters": parameter_count(meta["vocab"]["size"], StudentConfig.from_dict(meta["student"])),
        "eval_tokens": meta["eval_tokens"],
        "evals": int(meta["student"].get("average_last", 1)),
        "noise_exponent": 0.5,
        "gpu_flops": 6 * report["tokens_per_s"] * meta["parameters"],  # as measured here
    }
    report["power"] = {
        name: power.plan(s["noise"], len(complete), meta["budget_tokens"], 0.005, run)
        for name, s in report["stats"].items()
    }
    return report


def table(report: dict) -> str:
    """The report as Markdown: the setting, then per evaluation set every arm against random."""
    m = report["pack"]
    lines = [
        f"GPU probe: {len(m['arms'])} arms x {m['seeds']} seeds, student {m['parameters']:,} parameters "
        f"({m['student']['layers']} layers x {m['student']['hidden_size']}, context {m['student']['seq_len']}), "
        f"{m['budget_tokens']:,} tokens/arm = {m['tokens_per_parameter']} tokens/parameter "
        f"(wanted {m['budget_wanted']:,}), pool {m['pool']['tokens']:,} tokens, eval {m['eval_tokens']:,} tokens",
        f"device {report.get('device')}, {report.get('tokens_per_s', 0):,.0f} training tokens/s, "
        f"{report['seconds']} s; seeds complete: {report['seeds_complete']}"
        + (f"; {report['stopped']}" if report["stopped"] else ""),
    ]
    for name, s in report.get("stats", {}).items():
        noise = s["noise"]
        lines += [
            "",
            f"eval {name}: noise floor {noise['noise_floor']:.4f} bits/byte, random vs random: {noise['random_vs_random']}",
            power.describe(report["power"][name]),
            "",
            "| arm | bits/byte | vs random [95% CI] | verdict |",
            "|---|---|---|---|",
        ]
        for arm in m["arms"]:
            e = s["arms"][arm]
            d = e.get("diff_vs_random")
            cell = "" if not d else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            lines.append(
                f"| {arm} | {e['bpb']['mean']:.4f} ± {_sd(e['bpb']['sd'])} | {cell} | {e.get('verdict', '')} |"
            )
    return "\n".join(lines) + "\n"


def _sd(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="directory with pack.json and pack.npz.zst")
    parser.add_argument("--out", type=Path, required=True, help="where runs.jsonl, probe-gpu.json/.md go")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds; start no student past it")
    parser.add_argument("--device", default=None, help="override the pack's student.device (e.g. cpu)")
    args = parser.parse_args(argv)
    if not (args.pack / "pack.json").is_file():
        raise SystemExit(
            f"gpu probe: error: --pack {args.pack}: no pack.json; build one with python -m pipeline.probe.pack"
        )
    report = run(args.pack, args.out, args.time_limit, args.device)
    print(table(report))


if __name__ == "__main__":
    main()
