"""Scale benchmark: a whole `litho generate` run at 10k, 100k and 1M rows, and near dedup on Ray.

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--repo DIR] [--label after]
                                [--baseline DIR [--baseline-python PY] [--baseline-sizes 10000,100000]] [--write]
    python bench/bench_scale.py --quick     # smoke run: 100 rows, near dedup on 1,000 documents

Every size runs in a fresh subprocess with the dummy teacher, ``filters.lm=null`` and
``dedup=minhash`` (the config of issue 11), on a local Ray instance of ``--cpus`` CPUs. Reported:
wall time per phase (the manifest's ``timings_s``), rows/s per stage (rows that reached the stage
over its seconds: summed inside the workers for map stages, the driver's wall time for dataset
stages), the driver's peak RSS (VmHWM of the process that calls ``pipeline.run.run``) and the
object store's peak (bytes used, sampled every 0.5 s, plus bytes spilled).

The near-dedup section times ``pipeline/near_dedup.py`` on Ray against the in-process
``filters.dedup.lsh.near_dedup`` on the planted corpus of bench/bench_dedup.py (``--dedup-docs``),
each in a fresh subprocess (bench_dedup.py's own worker, so Ray's start-up is not counted).

``--repo DIR`` runs another checkout's code with its own venv (``DIR/.venv/bin/python``).
``--baseline DIR`` also runs a second checkout (e.g. ``git archive main`` unpacked into a folder, with
``--baseline-python /work/main/.venv/bin/python``: its code goes first on ``PYTHONPATH``) at each of
``--baseline-sizes``, right before the same size of ``--repo``, and prints every measurement as a
ratio of the two: the before/after comparison comes from one run on one machine load. Run it under
``flock /tmp/litho-bench.lock`` on a shared machine; the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ("teacher=dummy", "filters.lm=null", "dedup=minhash")


def _vm(field: str) -> float:
    """A /proc/self/status field in MiB (VmHWM: the peak resident set of this process)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


class StoreSampler(threading.Thread):
    """Samples the Ray object store's bytes in use every ``every`` seconds while Ray is up."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.peak, self.spilled, self.stop = every, 0, 0, threading.Event()

    def run(self) -> None:
        import ray
        from ray._private import internal_api

        state = None
        while not self.stop.is_set():
            try:
                if ray.is_initialized():
                    if state is None:
                        state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
                    stats = internal_api.get_memory_info_reply(state, timeout_seconds=5).store_stats
                    self.peak = max(self.peak, int(stats.object_store_bytes_used))
                    self.spilled = max(self.spilled, int(stats.spilled_bytes_total))
                else:
                    state = None
            except Exception:  # Ray starting or stopping between two samples
                state = None
            self.stop.wait(self.every)


def one(n: int, out: str, cpus: int, extra: list[str]) -> None:
    """One measured run in this (fresh) process: prints a JSON line with the measurements."""
    from hydra import compose, initialize_config_module

    from pipeline.run import run

    overrides = [*OVERRIDES, f"n={n}", f"output.dir={out}", f"cluster.num_cpus={cpus}", *extra]
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    sampler = StoreSampler()
    sampler.start()
    started = time.perf_counter()
    manifest = run(cfg)
    wall = time.perf_counter() - started
    sampler.stop.set()
    result = {
        "n": n,
        "wall_s": wall,
        "driver_peak_rss_mib": _vm("VmHWM"),
        "store_peak_mib": sampler.peak / 2**20,
        "store_spilled_mib": sampler.spilled / 2**20,
        "timings_s": manifest["timings_s"],
        "counts": manifest["counts"],
        "stages": [{k: s[k] for k in ("name", "rows_in", "seconds")} for s in manifest["stages"]],
    }
    print("RESULT " + json.dumps(result), flush=True)


def measure(repo: Path, n: int, cpus: int, extra: list[str], python: Path | None = None) -> dict:
    python = python or repo / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        # The child imports the code of `repo` (its venv holds an editable install of it).
        env = {**os.environ, "PYTHONPATH": str(repo)}
        cmd = [str(python), __file__, "--one", str(n), f"{tmp}/run", "--cpus", str(cpus), *extra]
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"n={n} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return json.loads(line[len("RESULT ") :])


def dedup_pair(repo: Path, docs: int, python: Path | None = None) -> dict:
    """Seconds of near dedup in one process and on Ray, on the planted corpus (bench_dedup's worker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from bench.planted import build_planted_corpus

    corpus = build_planted_corpus(docs, seed=0, novel=0.5)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-dedup-") as tmp:
        path = Path(tmp) / "corpus.parquet"
        pq.write_table(pa.table({"id": corpus.ids, "text": corpus.texts}), path)
        python, script = python or repo / ".venv" / "bin" / "python", repo / "bench" / "bench_dedup.py"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        keeps = {}
        for method in ("litho", "litho-ray"):
            stem = str(Path(tmp) / method)
            subprocess.run(
                [str(python), str(script), "--worker", method, str(path), stem], check=True, cwd=repo, env=env
            )
            out[method] = json.loads(Path(stem + ".json").read_text())["seconds"]
            keeps[method] = Path(stem + ".npy").read_bytes()
        out["same_decisions"] = keeps["litho"] == keeps["litho-ray"]
    return out


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def report(results: list[dict], dedup: dict | None, label: str) -> str:
    phases = ["plan_s", "generate_s", "score_filter_dedup_s", "write_s", "total_s"]
    rows = []
    for r in results:
        t = r["timings_s"]
        rows.append(
            [f"{r['n']:,}", label, *(f"{t.get(p, 0):.1f}" for p in phases), f"{r['wall_s']:.1f}",
             f"{r['n'] / r['wall_s']:,.0f}", f"{1e3 * r['wall_s'] / r['n']:.2f}",
             f"{r['driver_peak_rss_mib']:.0f}", f"{r['store_peak_mib']:.0f}", f"{r['store_spilled_mib']:.0f}"]
        )  # fmt: skip
    header = ["rows", "code", *phases, "wall s", "rows/s", "ms/row", "driver peak RSS MiB",
              "object store peak MiB", "spilled MiB"]  # fmt: skip
    parts = [table(header, rows)]
    names = [s["name"] for s in results[0]["stages"]] if results else []
    per_stage = [
        ["generate", *(f"{r['n'] / max(r['timings_s'].get('generate_s', 0), 1e-9):,.0f}" for r in results)]
    ]
    for name in names:
        cells = []
        for r in results:
            s = next((s for s in r["stages"] if s["name"] == name), None)
            cells.append(f"{s['rows_in'] / s['seconds']:,.0f}" if s and s["seconds"] else "-")
        per_stage.append([name, *cells])
    parts.append(table(["stage rows/s", *(f"{r['n']:,} ({label})" for r in results)], per_stage))
    if dedup:
        ratio = dedup["litho-ray"] / dedup["litho"]
        parts.append(
            table(
                ["docs", "code", "in-process s", "Ray s", "Ray / in-process", "same decisions"],
                [
                    [
                        f"{dedup['docs']:,}",
                        label,
                        f"{dedup['litho']:.1f}",
                        f"{dedup['litho-ray']:.1f}",
                        f"{ratio:.1f}x",
                        dedup["same_decisions"],
                    ]
                ],
            )  # fmt: skip
        )
    return "\n\n".join(parts)


RATIOS = (  # (column, how to read it from a result)
    ("plan_s", lambda r: r["timings_s"].get("plan_s", 0)),
    ("generate_s", lambda r: r["timings_s"].get("generate_s", 0)),
    ("score_filter_dedup_s", lambda r: r["timings_s"].get("score_filter_dedup_s", 0)),
    ("write_s", lambda r: r["timings_s"].get("write_s", 0)),
    ("wall s", lambda r: r["wall_s"]),
    ("driver peak RSS", lambda r: r["driver_peak_rss_mib"]),
    ("object store peak", lambda r: r["store_peak_mib"]),
)


def ratios(after: list[dict], before: list[dict], label: str, base_label: str) -> str:
    """``label / base_label`` for every size both ran (below 1: the branch is faster or smaller)."""
    rows = []
    for b in before:
        a = next((r for r in after if r["n"] == b["n"]), None)
        if a is None:
            continue
        cells = [f"{get(a) / get(b):.2f}" if get(b) else "-" for _, get in RATIOS]
        rows.append([f"{b['n']:,}", *cells, a["counts"] == b["counts"]])
    header = ["rows", *(f"{name} {label} / {base_label}" for name, _ in RATIOS), "same counts"]
    return table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repo", default=str(ROOT), help="checkout whose code (and .venv) runs")
    parser.add_argument("--label", default="this branch", help="name of the code in the tables")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--dedup-docs", type=int, default=100000, help="0 = skip the near-dedup section")
    parser.add_argument("--baseline", help="a second checkout measured in the same run (ratios against it)")
    parser.add_argument("--baseline-python", help="its python (default BASELINE/.venv/bin/python)")
    parser.add_argument("--baseline-label", default="main", help="name of the baseline in the tables")
    parser.add_argument("--baseline-sizes", help="sizes the baseline runs (default: --sizes)")
    parser.add_argument("--write", action="store_true", help="append the tables to bench/results/scale.md")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): one run of 100 rows, near dedup on 1,000 documents, no write",
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="more overrides for every run (Hydra syntax)")
    args = parser.parse_args()
    if args.one:
        return one(int(args.one[0]), args.one[1], args.cpus, args.extra)
    if args.quick:
        args.sizes, args.dedup_docs, args.baseline_sizes, args.write = "100", 1000, None, False
    repo = Path(args.repo).resolve()
    command = "python bench/bench_scale.py " + " ".join(sys.argv[1:])
    header = (
        f"{command}\n{date.today()}, {os.cpu_count()} CPUs, Ray on {args.cpus}, load average at start "
        f"{os.getloadavg()[0]:.1f}; code: {repo} ({args.label})"
    )
    print(header, flush=True)
    base = Path(args.baseline).resolve() if args.baseline else None
    base_python = Path(args.baseline_python) if args.baseline_python else None
    base_sizes = {int(s) for s in (args.baseline_sizes or args.sizes).split(",")} if base else set()
    if base:
        header += f"; baseline: {base} ({args.baseline_label}) at {sorted(base_sizes)}"
        print(header[header.index("; baseline") :], flush=True)

    def show(name: str, r: dict) -> None:
        print(f"[{r['n']:,} {name}] {r['wall_s']:.1f} s, driver {r['driver_peak_rss_mib']:.0f} MiB, "
              f"store {r['store_peak_mib']:.0f} MiB, load {os.getloadavg()[0]:.1f}, {r['timings_s']}", flush=True)  # fmt: skip

    results, before = [], []
    for n in (int(s) for s in args.sizes.split(",")):
        if n in base_sizes:  # the baseline first, then this code, at the same size
            before.append(measure(base, n, args.cpus, args.extra, base_python))
            show(args.baseline_label, before[-1])
        results.append(measure(repo, n, args.cpus, args.extra))
        show(args.label, results[-1])
    dedup = base_dedup = None
    if args.dedup_docs:
        if base:
            base_dedup = {"docs": args.dedup_docs, **dedup_pair(base, args.dedup_docs, base_python)}
            print(f"[dedup {args.dedup_docs:,} {args.baseline_label}] {base_dedup}", flush=True)
        dedup = {"docs": args.dedup_docs, **dedup_pair(repo, args.dedup_docs)}
        print(f"[dedup {args.dedup_docs:,}] {dedup}", flush=True)
    load = f"load average at end {os.getloadavg()[0]:.1f}"
    text = report(results, dedup, args.label)
    if base:
        text = "\n\n".join([report(before, base_dedup, args.baseline_label), text,
                             ratios(results, before, args.label, args.baseline_label)])  # fmt: skip
    print(f"\n{text}\n\n{load}")
    if args.write:
        out = ROOT / "bench" / "results" / "scale.md"
        previous = out.read_text() if out.exists() else "# Scale benchmark\n"
        out.write_text(f"{previous.rstrip()}\n\n```\n{header}\n{load}\n```\n\n{text}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
