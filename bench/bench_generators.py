"""Every generator with the real embedded teacher; seed texts: Python's own reference docs (pydoc_data).

Prints one example row per generator (the source of the examples in docs/generators.md) and the
dense generator's token savings (target tokenizer = the teacher's), and writes everything to
bench/results/generators.json. Usage:

    python bench/bench_generators.py [--n 8] [--max-new-tokens 128] [--only dense,instruct] [--set KEY=VALUE ...]
    python bench/bench_generators.py --quick     # smoke run: 1 row each, 16 new tokens; writes nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline.conftest import compose  # noqa: E402

RUNS = {
    "textbook": ["generator.formats=[textbook_section]"],
    "rephrase": ["generator=rephrase", "generator.seed_file={seeds}", "generator.id_column=doc_id"],
    "dense": ["generator=dense", "generator.seed_file={seeds}", "generator.id_column=doc_id"],
    "instruct": ["generator=instruct", "output=sft", "generator.turns=2"],
    "layered": [
        "generator=layered",
        "generator.seed_file={seeds}",
        "generator.max_words=120",
        "generator.inline=after",
    ],
}
SHOWN = 400  # characters of each long field in the printed example


def _rows(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _short(value):
    if isinstance(value, str) and len(value) > SHOWN:
        return value[:SHOWN] + f"... [{len(value)} chars]"
    if isinstance(value, list):
        return [_short(v) for v in value[:6]]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def dense_summary(rows: list[dict]) -> dict:
    saved = np.array([r["tokens_saved"] for r in rows], dtype=float)
    source = np.array([r["source_tokens"] for r in rows], dtype=float)
    recall = np.array([r["key_term_recall"] for r in rows], dtype=float)
    kept = np.array([not r.get("drop_reason") for r in rows], dtype=bool)
    return {
        "rows": len(rows),
        "kept": int(kept.sum()),
        "mean_source_tokens": float(source.mean()),
        "mean_tokens_saved_all": float(saved.mean()),
        "mean_key_term_recall_all": float(np.nanmean(recall)),
        "kept_token_saving_ratio": float(saved[kept].sum() / source[kept].sum()) if kept.any() else None,
        "mean_tokens_saved_kept": float(saved[kept].mean()) if kept.any() else None,
    }


def run_all(args, work: Path) -> dict:
    """Every generator of ``--only`` in turn on one local Ray instance; their results by name."""
    from pydoc_data.topics import topics  # clean English prose that ships with Python

    import ray

    from pipeline.run import run

    seeds = work / "seeds.parquet"
    texts = [topics[k] for k in sorted(topics) if len(topics[k].split()) > 150][:12]
    pq.write_table(pa.table({"text": texts, "doc_id": [f"pydoc-{i}" for i in range(len(texts))]}), seeds)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    for name in args.only.split(","):
        started = time.perf_counter()
        overrides = [o.format(seeds=seeds) for o in RUNS[name]] + args.set
        out = work / name
        manifest = run(
            compose(
                f"n={args.n}",
                f"teacher.sampling.max_new_tokens={args.max_new_tokens}",
                "filters.min_words=5",
                "++filters.lm=null",
                f"output.dir={out}",
                *overrides,
            )
        )
        kept, rejected = _rows(out / "data"), _rows(out / "rejected")
        example = (kept or rejected)[0]
        results[name] = {
            "overrides": overrides,
            "counts": manifest["counts"],
            "dropped_by_reason": manifest["dropped_by_reason"],
            "seconds": round(time.perf_counter() - started, 1),
            "example": {k: _short(v) for k, v in example.items() if k not in ("prompt", "sampling")},
        }
        if name == "dense":
            results[name]["dense"] = dense_summary(kept + rejected)
        print(json.dumps({name: results[name]}, indent=1, ensure_ascii=False, default=str), flush=True)
    ray.shutdown()
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--only", default=",".join(RUNS))
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--tag", default="", help="results key suffix, e.g. greedy -> dense@greedy")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): every generator, 1 row, 16 new tokens, no write",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.max_new_tokens = 1, 16
    with tempfile.TemporaryDirectory(prefix="litho-bench-gen-") as tmp:
        results = run_all(args, Path(tmp))
    print("\n| generator | planned | kept | s |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['counts']['planned']} | {r['counts']['kept']} | {r['seconds']} |")
    if args.quick:  # a smoke run: bench/results keeps the measured sizes
        return 0
    target = ROOT / "bench" / "results" / "generators.json"
    target.parent.mkdir(exist_ok=True)
    saved = json.loads(target.read_text()) if target.is_file() else {}
    for name, result in results.items():  # one entry per generator: a partial rerun keeps the others
        saved[name + (f"@{args.tag}" if args.tag else "")] = {
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            **result,
        }
    target.write_text(json.dumps(saved, indent=1, ensure_ascii=False, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
