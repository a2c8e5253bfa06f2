"""What each model-centric score costs against the scorer's plain pass (bits per byte alone).

No Ray, no Hydra. One model, the same texts, ``LMScorer.score`` timed per configuration, round-robin,
median of ``--repeats`` (the first call of each, which finds or loads the retrieval heads, is a warm-up):

* ``bits/byte``            — ``metrics=[]``: a plain SDPA forward and the NLL (the baseline);
* ``+ ifd``                — and the text again after its request (``ifd_v1``);
* ``+ influence``          — and the masked pass with the retrieval heads uniform (``attn_influence_v1``);
* ``+ reference``          — and bits per byte under a reference model (here the same model: ``ref_gap_v1``);
* ``attention``            — the four attention metrics (before this work, the default);
* ``attention + influence + ifd`` — the default of conf/filters/default.yaml.

Texts and requests: the rows of a litho output (``--rows runs/own256``: the teacher's texts and the
chat messages that asked for them), else Python's pydoc topics with a textbook-style request.

    flock /tmp/litho-heavy.lock python bench/bench_score_costs.py --rows runs/own256 --write
    python bench/bench_score_costs.py --quick --model /path/to/tiny-model   # the test's smallest size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model  # noqa: E402
from filters.scores.lm_scores import LMScorer  # noqa: E402

ATTN = ["sink_mass", "entropy", "long_range", "density"]
CONFIGS = {
    "bits/byte": {"metrics": []},
    "+ ifd": {"metrics": ["ifd"]},
    "+ influence": {"metrics": ["influence"]},
    "+ reference": {"metrics": [], "reference": True},
    "attention": {"metrics": ATTN},
    "attention + influence + ifd": {"metrics": [*ATTN, "influence", "ifd"]},
}


def inputs(rows: str | None, n: int) -> tuple[list[str], list[str]]:
    """``(texts, requests)``: a litho output's kept rows, or pydoc topics with a textbook-style request."""
    if rows:
        import pyarrow.parquet as pq

        table = pq.read_table(sorted(Path(rows, "data").glob("*.parquet")), columns=["text", "prompt"])
        return table.column("text").to_pylist()[:n], table.column("prompt").to_pylist()[:n]
    from pydoc_data.topics import topics

    names = [k for k in sorted(topics) if 50 <= len(topics[k].split()) <= 400][:n]
    request = "Write a textbook section. Topic: the Python language's {} (computing). Audience: students."
    return [topics[k] for k in names], [
        json.dumps([{"role": "user", "content": request.format(k)}]) for k in names
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--rows", default=None, help="a litho output directory whose rows to score")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): 4 texts, 1 repeat"
    )
    parser.add_argument("--write", action="store_true", help="append the table to bench/results/scorer.md")
    args = parser.parse_args()
    n, repeats = (4, 1) if args.quick else (args.texts, args.repeats)
    texts, prompts = inputs(args.rows, n)
    common = dict(model=args.model, device="cpu", batch_size=8, layer_groups=0, threads=args.threads)
    scorers = {
        name: LMScorer(
            **common,
            metrics=c["metrics"],
            prompt_column="prompt" if "ifd" in c["metrics"] else None,
            reference=args.model if c.get("reference") else None,
        )
        for name, c in CONFIGS.items()
    }
    for scorer in scorers.values():  # warm-up: first calls allocate, the heads are found or read
        scorer.score(texts[:2], prompts[:2])
    runs = {name: [] for name in scorers}
    load = os.getloadavg()
    for _ in range(repeats):
        for name, scorer in scorers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            scorer.score(texts, prompts)
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    base = median([w for w, _ in runs["bits/byte"]])
    tokens = sum(len(x) for x in scorers["bits/byte"].tok(texts, add_special_tokens=False)["input_ids"])
    heads = scorers["+ influence"].uniform
    model_line = cpu_model()
    header = (
        f"{args.model} | {scorers['bits/byte'].model.dtype} | {len(texts)} texts, {tokens:,} scorer tokens "
        f"({'rows of ' + args.rows if args.rows else 'pydoc topics'}) | {model_line} | load {load[0]:.1f} -> "
        f"{os.getloadavg()[0]:.1f} | retrieval heads {[(int(k), v.tolist()) for k, v in heads.items()]}"
    )
    table = ["| scorer | s (median) | tokens/s | time vs bits/byte alone |", "|---|---|---|---|"]
    for name, r in runs.items():
        wall = median([w for w, _ in r])
        table.append(f"| {name} | {wall:.2f} | {tokens / wall:,.0f} | {wall / base:.2f}x |")
    print("# " + header)
    print("\n".join(table))
    if args.write:
        out = Path(__file__).resolve().parent / "results" / "scorer.md"
        command = "python bench/bench_score_costs.py " + " ".join(sys.argv[1:])
        with out.open("a") as f:
            f.write(
                f"\n```\n{command}\n{time.strftime('%Y-%m-%d %H:%M')}, {header}\n```\n\n"
                + "\n".join(table)
                + "\n"
            )


if __name__ == "__main__":
    main()
