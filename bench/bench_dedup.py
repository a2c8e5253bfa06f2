"""Near-dedup benchmark: litho vs datasketch MinHashLSH on a planted corpus of real text.

    python bench/bench_dedup.py [--sizes 10000,30000,100000] [--quick] [--write]

Every method runs in its own fresh subprocess on the same corpus file and the same shingles
(5-word n-grams of NFKC-lowercased text). Time covers texts in memory to keep/drop decisions
(shingling included), not loading the file. "Peak RSS" is the subprocess's high-water RSS (VmHWM)
while the method runs, reset after imports, loading the texts and a 50-text warm-up; "RSS growth"
subtracts the RSS at that point, so it is what the method itself adds on top of the texts. datasketch runs as documented: threshold 0.8, 128 permutations, its default SHA-1
hashing of shingle bytes, and the query-then-insert loop that keeps the first of each duplicate set.
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

import numpy as np  # noqa: E402

METHODS = ("litho", "datasketch", "datasketch-xxh32")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0), so the
    peak excludes loading the corpus file."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _datasketch(ids, texts, hashfunc=None) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    from generators.text import normalized_words

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    keep = np.ones(len(texts), bool)
    extra = {"hashfunc": hashfunc} if hashfunc else {}
    for k, text in enumerate(texts):
        words = normalized_words(text)
        shingles = (
            [" ".join(words[i : i + 5]).encode() for i in range(max(len(words) - 4, 1))] if words else []
        )
        m = MinHash(num_perm=128, **extra)
        m.update_batch(shingles)
        if lsh.query(m):
            keep[k] = False
        else:
            lsh.insert(ids[k], m)
    return keep


def _litho_ray(ids: list[str], texts: list[str]) -> np.ndarray:
    """pipeline/near_dedup.py on a local 2-CPU Ray instance (started by the warm-up call)."""
    import pyarrow as pa
    import ray

    from filters.dedup.minhash import MinHashConfig
    from pipeline.near_dedup import near_dedup_dataset

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    table = pa.table({"id": ids, "text": texts, "drop_reason": [""] * len(ids)})
    blocks = [table.slice(k, 2000) for k in range(0, len(ids), 2000)]
    out = near_dedup_dataset(ray.data.from_arrow(blocks), MinHashConfig()).select_columns(
        ["id", "drop_reason"]
    )
    kept = {r["id"] for r in out.filter(expr="drop_reason == ''").select_columns(["id"]).take_all()}
    return np.array([i in kept for i in ids])


def run_method(method: str, ids: list[str], texts: list[str]) -> tuple[np.ndarray, dict]:
    """Keep mask (and litho's counters) of one method."""
    import xxhash

    from filters.dedup.lsh import near_dedup
    from filters.dedup.minhash import MinHashConfig

    if method == "litho":
        result = near_dedup(ids, texts, cfg=MinHashConfig())
        return result.keep, result.stats
    if method == "litho-ray":
        return _litho_ray(ids, texts), {}
    if method == "datasketch":
        return _datasketch(ids, texts), {}
    return _datasketch(ids, texts, hashfunc=xxhash.xxh32_intdigest), {}


def worker(method: str, corpus: str, out: str) -> None:
    """One measured run in this (fresh) process; writes the keep mask and measurements."""
    import pyarrow.parquet as pq

    table = pq.read_table(corpus)
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    del table
    run_method(method, ids[:50], texts[:50])  # warm-up: first-call costs of numpy/xxhash/datasketch
    base = _status_mib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    keep, stats = run_method(method, ids, texts)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    np.save(out + ".npy", keep)
    Path(out + ".json").write_text(json.dumps({"seconds": seconds, "peak": peak, "base": base, **stats}))


def measure(method: str, corpus: Path, tmp: Path) -> tuple[np.ndarray, dict]:
    out = str(tmp / method)
    subprocess.run([sys.executable, __file__, "--worker", method, str(corpus), out], check=True)
    return np.load(out + ".npy"), json.loads(Path(out + ".json").read_text())


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def run(sizes: list[int], seed: int, exact_up_to: int, methods: list[str], repeats: int, novel) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.planted import build_planted_corpus
    from bench.truth import exact_pairs, planted_pairs, score

    compare, scaling, notes = [], [], []
    for n in sizes:
        t0 = time.perf_counter()
        corpus = build_planted_corpus(n, seed=seed, novel=novel)
        if n <= exact_up_to:
            truth = exact_pairs(corpus.texts)
            if n == min(sizes):  # check the large-corpus ground truth against the exact one
                approx = planted_pairs(corpus.texts, corpus.family)
                exact_set = set(zip(truth.i.tolist(), truth.j.tolist(), strict=True))
                lost = exact_set - set(zip(approx.i.tolist(), approx.j.tolist(), strict=True))
                lost_08 = sum(
                    1 for k in range(len(truth.i)) if truth.sim[k] >= 0.8 and (truth.i[k], truth.j[k]) in lost
                )
                notes.append(
                    f"At {n:,} docs the planted+LSH ground truth missed {len(lost)} of {len(exact_set)} exact "
                    f"pairs with J >= 0.5 ({lost_08} with J >= 0.8)."
                )
        else:
            truth = planted_pairs(corpus.texts, corpus.family)
        print(f"[{n:,}] corpus + ground truth ({truth.method}): {time.perf_counter() - t0:.1f}s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.parquet"
            pq.write_table(pa.table({"id": corpus.ids, "text": corpus.texts}), path)
            results = {}
            for _ in range(repeats):  # interleaved, so a burst of load on the shared machine hits all
                for m in methods:
                    keep, info = measure(m, path, Path(tmp))
                    if m in results:
                        assert (keep == results[m][0]).all(), f"{m}: decisions changed between repeats"
                        info["seconds"] = min(info["seconds"], results[m][1]["seconds"])
                        info["peak"] = max(info["peak"], results[m][1]["peak"])
                    results[m] = (keep, info)
        for method, (keep, info) in results.items():
            s = score(keep, truth)
            compare.append(
                [f"{n:,}", method, truth.method.split(" ")[0], s.pairs_at_threshold, s.missed, f"{s.miss_rate:.2%}",
                 s.removed, s.false_removals, s.removed_below_threshold, f"{info['seconds']:.1f}",
                 f"{n / info['seconds']:,.0f}", f"{info['peak']:.0f}", f"{info['peak'] - info['base']:.0f}"]
            )  # fmt: skip
            print(table(["size", "method"] + COMPARE[2:], [compare[-1]]).splitlines()[-1], flush=True)
        if "litho-ray" in results:
            same = bool((results["litho-ray"][0] == results["litho"][0]).all())
            notes.append(
                f"At {n:,} docs litho-ray made {'the same' if same else 'DIFFERENT'} decisions as litho; its "
                "peak RSS is the Ray driver's only (workers and object store are other processes)."
            )
        lit, ds = results["litho"][1], results["datasketch"][1]
        scaling.append(
            [f"{n:,}", f"{lit['seconds']:.1f}", f"{1e6 * lit['seconds'] / n:.0f}", f"{lit['peak']:.0f}",
             f"{(lit['peak'] - lit['base']) * 2**20 / n:,.0f}", f"{lit['index_bytes'] / n:.0f}",
             lit["candidate_pairs"], lit["verified_pairs"], f"{ds['seconds'] / lit['seconds']:.1f}x"]
        )  # fmt: skip
    return "\n\n".join(
        [
            table(COMPARE, compare),
            table(SCALING, scaling),
            "\n".join(f"- {note}" for note in notes),
        ]
    )


COMPARE = ["docs", "method", "truth", "pairs J>=0.8", "missed", "miss rate", "removed", "false removals J<0.6",
           "removed 0.6-0.8", "time s", "docs/s", "peak RSS MiB", "RSS growth MiB"]  # fmt: skip
SCALING = ["docs", "time s", "us/doc", "peak RSS MiB", "RSS growth B/doc", "index B/doc", "candidate pairs",
           "verified pairs", "speed vs datasketch"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): sizes 3000,10000, one repeat",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact-up-to", type=int, default=30000, help="largest size with all-pairs truth")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the fastest counts")
    parser.add_argument("--ray", action="store_true", help="also time pipeline/near_dedup.py on Ray (2 CPUs)")
    parser.add_argument("--boilerplate", action="store_true", help="keep the sources' repeated boilerplate")
    parser.add_argument("--write", action="store_true", help="also write bench/results/dedup.md")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    sizes = [3000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    methods = [*METHODS, "litho-ray"] if args.ray else list(METHODS)
    command = "python bench/bench_dedup.py " + " ".join(sys.argv[1:])
    header = (
        f"{command}\n{date.today()}, {os.cpu_count()} CPUs, load average at start "
        f"{os.getloadavg()[0]:.1f} (the machine is shared: compare methods within one run)"
    )
    print(header, flush=True)
    report = run(sizes, args.seed, args.exact_up_to, methods, repeats, None if args.boilerplate else 0.5)
    print("\n" + report)
    if args.write:
        out = ROOT / "bench" / "results" / "dedup.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"# Near-dedup benchmark\n\n```\n{header}\n```\n\n{report}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
