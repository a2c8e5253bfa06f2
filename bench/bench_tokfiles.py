"""Token-file benchmark: a ``litho generate`` run with ``output.token_formats=[megatron]``, against datatrove.

    python bench/bench_tokfiles.py [--sizes 100000,1000000] [--cpus 2] [--write]
    python bench/bench_tokfiles.py --quick     # smoke run: 100 rows (tests/bench/test_bench_tokfiles.py's size)

Each size runs in a fresh subprocess: the dummy teacher, ``filters.lm=null``, ``output.token_formats=
[megatron]`` on a local Ray instance of ``--cpus`` CPUs. Reported: the token-file phase's rows/s and
its share of the run (the manifest's ``token_files_s`` over ``total_s``), and the driver's peak RSS
(VmHWM). Then, on the same kept rows and in the same run, three baselines each in one process:
tokenization alone (the target tokenizer's batch encode of every kept text, what litho's phase would
cost if it had to tokenize), datatrove's ``MegatronDocumentTokenizer`` and its ``DocumentTokenizer``
(nanotron's ``.ds``, no shuffling) writing the same documents with the same tokenizer and EOS.
litho's phase reuses the ids ``token_metrics`` kept, so it does not tokenize; its tasks run on the
Ray CPUs, the baselines on one core: both are printed as they are, with the CPU and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

OVERRIDES = ("teacher=dummy", "filters.lm=null", "output.token_formats=[megatron]")


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def one(n: int, out: str, cpus: int) -> None:
    """The measured litho run (in a fresh process); prints a RESULT line."""
    from hydra import compose, initialize_config_module

    from pipeline.run import run

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[*OVERRIDES, f"n={n}", f"output.dir={out}", f"cluster.num_cpus={cpus}"],
        )
    started = time.perf_counter()
    manifest = run(cfg)
    result = {"n": n, "wall_s": time.perf_counter() - started, "driver_peak_rss_mib": _peak_mib(),
              "timings_s": manifest["timings_s"], "kept": manifest["counts"]["kept"],
              "tokens": sum(s["tokens"] for s in manifest["tokenized"]["splits"].values())}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


def baselines(out: Path) -> dict:
    """Seconds of tokenization alone and of datatrove's two writers on the run's kept rows."""
    import pyarrow.parquet as pq
    from datatrove.data import Document
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer
    from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer

    from filters.tokenizers import load_target_tokenizer
    from generators.teachers.models import materialize, resolve

    texts = [t for p in sorted((out / "data").glob("*.parquet")) for t in pq.read_table(p, columns=["text"])["text"].to_pylist()]  # fmt: skip
    tok_json = str(materialize(resolve("embedded:smollm2", "filters.tokenizer")) / "tokenizer.json")
    target = load_target_tokenizer("embedded:smollm2")
    eos = target.tok.id_to_token(target.eos_id)
    found = {}
    started = time.perf_counter()
    tokens = sum(
        len(ids) + 1 for i in range(0, len(texts), 8192) for ids in target.encode(texts[i : i + 8192])
    )
    found["tokenize_only_s"], found["tokens"] = time.perf_counter() - started, tokens
    for name, step in (
        ("datatrove_megatron_s", lambda d: MegatronDocumentTokenizer(d, tokenizer_name_or_path=tok_json, eos_token=eos)),
        ("datatrove_ds_s", lambda d: DocumentTokenizer(d, tokenizer_name_or_path=tok_json, eos_token=eos, shuffle_documents=False)),
    ):  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-dt-") as folder:
            docs = (Document(text=t, id=str(i)) for i, t in enumerate(texts))
            started = time.perf_counter()
            step(folder).run(docs, rank=0, world_size=1)
            found[name] = time.perf_counter() - started
    return found


def measure(n: int, cpus: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-tokfiles-") as tmp:
        cmd = [sys.executable, __file__, "--one", str(n), f"{tmp}/run", "--cpus", str(cpus)]
        proc = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"n={n} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        result = json.loads(line[len("RESULT ") :])
        result.update(baselines(Path(tmp) / "run"))
        return result


def table(results: list[dict]) -> str:
    head = ["rows", "kept", "run s", "token files s", "share of run", "token files rows/s", "driver peak RSS MiB",
            "tokenize only s", "datatrove Megatron s", "datatrove .ds s", "litho / tokenize only",
            "litho / datatrove Megatron"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        phase, total = r["timings_s"]["token_files_s"], r["timings_s"]["total_s"]
        cells = [f"{r['n']:,}", f"{r['kept']:,}", f"{total:.1f}", f"{phase:.2f}", f"{phase / total:.1%}",
                 f"{r['kept'] / phase:,.0f}", f"{r['driver_peak_rss_mib']:.0f}", f"{r['tokenize_only_s']:.2f}",
                 f"{r['datatrove_megatron_s']:.2f}", f"{r['datatrove_ds_s']:.2f}",
                 f"{phase / r['tokenize_only_s']:.2f}", f"{phase / r['datatrove_megatron_s']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--write", action="store_true", help="append the table to bench/results/tokfiles.md")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): 100 rows, no write"
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(int(args.one[0]), args.one[1], args.cpus)
    if args.quick:
        args.sizes, args.write = "100", False
    header = (f"python bench/bench_tokfiles.py --sizes {args.sizes} --cpus {args.cpus}\n{date.today()}, {cpu_model()}, "
              f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(header, flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        results.append(measure(n, args.cpus))
        print(f"[{n:,}] {json.dumps(results[-1])} load {os.getloadavg()[0]:.1f}", flush=True)
    text = table(results)
    load = f"load average at end {os.getloadavg()[0]:.1f}"
    print(f"\n{text}\n\n{load}")
    if args.write:
        path = ROOT / "bench" / "results" / "tokfiles.md"
        previous = path.read_text() if path.exists() else "# Token-file benchmark\n"
        path.write_text(f"{previous.rstrip()}\n\n```\n{header}\n{load}\n```\n\n{text}\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
