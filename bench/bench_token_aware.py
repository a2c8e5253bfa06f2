"""Token-aware generation, measured: the embedded teacher steered toward a student's tokenizer.

One command, in this order (every step in this process or a ``litho`` subprocess, one at a time):

1. **The student tokenizer**: a SentencePiece unigram model (``--vocab`` pieces, byte fallback on)
   trained here on real text nobody here wrote: man pages (/usr/share/man/man1) and Python's
   pydoc topics, one line a sentence.
2. **The cost table and its approximation** (:mod:`generators.teachers.token_aware`) for the
   embedded teacher (SmolLM2-135M-Instruct) against (a) that SentencePiece model and (b) the
   teacher's own tokenizer: the distribution of costs, and the per-token sum against the true
   target count of whole texts on pydoc topics and man pages.
3. **Generation** with ``litho generate`` (the default plan, ``n`` rows, seed 0, default sampling,
   ``teacher.dtype`` ``--dtype``) at each ``--strengths`` value with target (a), scored for (a):
   student chars/token, fertility (tokens per word), byte-fallback rate, bits/byte of the default
   LM scorer and the share of rows the default filters keep. Target (b) needs no runs of its own:
   every teacher token costs exactly one of its own tokens, so its bias is zero at any strength
   and the texts are the strength-0 texts (the zero bias is checked here; that a zero bias gives
   the same texts is tested in tests/generators/teachers/test_token_aware.py).
4. **The probe** (``litho probe``, docs/probe.md): the kept rows of strength 0 and of the largest
   strength pooled into one Parquet file, arms ``aware`` and ``plain`` (all rows of one strength
   each, sampled to one token budget of the student tokenizer), plus ``random``/``random_b`` over
   the pool; bits/byte of the students on held-out pydoc and man text.

    flock /tmp/litho-bench.lock .venv/bin/python bench/bench_token_aware.py      # writes bench/results/token_aware.md
    .venv/bin/python bench/bench_token_aware.py --n 4 --strengths 0 2 --no-probe --no-write   # a quick look
    .venv/bin/python bench/bench_token_aware.py --quick   # smoke run: 2 rows, 48 tokens, no probe, no write

The load average (``uptime``) is recorded before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generators.teachers import token_aware as ta  # noqa: E402
from generators.text import man_page_text  # noqa: E402

TEACHER = "embedded:smollm2"
PY = sys.executable


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def man_texts(limit: int = 400) -> list[str]:
    """Plain text of man pages (roff requests stripped), as tests/conftest.py reads them."""
    texts = []
    for path in sorted(Path("/usr/share/man/man1").glob("*.gz"))[:limit]:
        text = man_page_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
        if len(text.split()) > 100:
            texts.append(text)
    return texts


def pydoc_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def train_sentencepiece(path: Path, vocab: int) -> Path:
    import sentencepiece as spm

    lines = [ln for t in man_texts() + pydoc_texts() for ln in t.splitlines() if ln.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(path.with_suffix("")),
        vocab_size=vocab,
        byte_fallback=True,
        model_type="unigram",
        minloglevel=2,
    )
    return path


def table_section(teacher_tok, targets: dict[str, str], cache: Path) -> tuple[list[str], dict]:
    from generators.tokenizers import load_target_tokenizer

    lines = [
        "| target | teacher tokens costing 0 / 1 / 2 / 3 / 4+ target tokens | with byte fallback | "
        "set | per-token sum / true count | mean abs error per text |",
        "|---|---|---|---|---|---|",
    ]
    tables = {}
    texts = {"pydoc": pydoc_texts(), "man": man_texts(200)}
    for name, spec in targets.items():
        target = load_target_tokenizer(spec)
        t0 = time.perf_counter()
        table = ta.cost_table(teacher_tok, target, cache)
        tables[name] = (table, time.perf_counter() - t0)
        cost = table["cost"]
        hist = [int((cost == k).sum()) for k in range(4)] + [int((cost >= 4).sum())]
        for set_name, set_texts in texts.items():
            gap = ta.approximation_gap(teacher_tok, target, table, set_texts)
            lines.append(
                f"| {name} | {' / '.join(f'{h:,}' for h in hist)} | {int((table['fallback'] > 0).sum()):,} | "
                f"{set_name} ({gap['texts']} texts, {gap['true']:,} target tokens) | {gap['ratio']:.3f} | "
                f"{gap['abs_error_per_text']:.3f} |"
            )
    return lines, tables


def generate(out: Path, n: int, strength: float, sp: str, dtype: str, max_new: int, extra=()) -> float:
    cmd = [
        PY, "-m", "pipeline.cli", "generate", f"n={n}", "seed=0", f"output.dir={out}",
        f"teacher.dtype={dtype}", f"teacher.sampling.max_new_tokens={max_new}",
        f"teacher.token_aware.strength={strength}", f"teacher.token_aware.target={sp}", f"filters.tokenizer={sp}",
        *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_metrics(out: Path, table: dict) -> dict:
    import pyarrow.parquet as pq

    from generators.teachers.models import load_tokenizer

    rows = [
        pq.read_table(p).to_pylist()
        for d in ("data", "rejected")
        for p in sorted((out / d).glob("*.parquet"))
    ]
    rows = [r for part in rows for r in part]
    kept = [r for r in rows if not r.get("drop_reason")]
    tok = load_tokenizer(TEACHER)
    ids = tok([r["text"] for r in rows], add_special_tokens=False)["input_ids"]
    costs = np.concatenate([table["cost"][np.asarray(i, dtype=np.int64)] for i in ids if i])
    sampling = json.loads(rows[0]["sampling"])

    def mean(col):
        return float(np.nanmean([r[col] for r in rows if r.get(col) is not None]))

    return dict(
        rows=len(rows),
        kept=len(kept) / max(1, len(rows)),
        chars_per_token=sum(len(r["text"]) for r in rows) / max(1, sum(r["n_tokens"] for r in rows)),
        fertility=mean("fertility"),
        byte_fallback_rate=sum(r["byte_fallback_rate"] * r["n_tokens"] for r in rows)
        / max(1, sum(r["n_tokens"] for r in rows)),
        bits_per_byte=mean("bits_per_byte_v1"),
        teacher_tokens=int(sum(len(i) for i in ids)),
        target_tokens=int(sum(r["n_tokens"] for r in rows)),
        mean_cost=float(costs.mean()),
        sampling=sampling.get("token_aware"),
        texts=[r["text"] for r in kept],
        n_tokens=[r["n_tokens"] for r in kept],
    )


def examples(work: Path, strengths: list[float], chars: int = 400) -> list[str]:
    """The same request's text at every strength (the first plan row kept at all of them)."""
    import pyarrow.parquet as pq

    texts = {}
    for s in strengths:
        rows = [
            r
            for p in sorted((work / f"strength-{s:g}" / "data").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()
        ]
        texts[s] = {r["id"]: r for r in rows}
    common = sorted(set.intersection(*(set(t) for t in texts.values())))
    if not common:
        return []
    first = texts[strengths[0]][common[0]]
    lines = [f"Request `{common[0]}` ({first.get('topic', '')}, {first.get('format', '')}):", ""]
    for s in strengths:
        text = " ".join(texts[s][common[0]]["text"].split())
        lines += [f"- strength {s:g}: {text[:chars]}{' …' if len(text) > chars else ''}"]
    return lines


def teacher_view(metrics: dict, texts: list[str]) -> dict:
    """The same texts scored for the teacher's own tokenizer (target b)."""
    from filters.scores.token_metrics import TokenMetrics

    out = TokenMetrics(tokenizer=TEACHER)({"text": np.asarray(texts, dtype=object)})
    n = np.asarray(out["n_tokens"], dtype=float)
    return dict(
        chars_per_token=sum(len(t) for t in texts) / n.sum(),
        fertility=float(np.nanmean(out["fertility"])),
        byte_fallback_rate=float((np.asarray(out["byte_fallback_rate"]) * n).sum() / n.sum()),
    )


def probe(work: Path, runs: dict, sp: str, seeds: int) -> tuple[list[str], dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    strengths = sorted(runs)
    plain, aware = runs[strengths[0]], runs[strengths[-1]]
    texts = plain["texts"] + aware["texts"]
    is_aware = [np.nan] * len(plain["texts"]) + [1.0] * len(aware["texts"])
    is_plain = [1.0] * len(plain["texts"]) + [np.nan] * len(aware["texts"])
    pool = work / "pool.parquet"
    pq.write_table(pa.table({"text": texts, "aware_rows": is_aware, "plain_rows": is_plain}), pool)
    # Equal budgets: 80% of the smaller side (decontamination may drop a few rows of either).
    budget = max(256, int(0.8 * min(sum(plain["n_tokens"]), sum(aware["n_tokens"]))))  # the probe's minimum
    arms = "{aware: {select: top, score: aware_rows, fraction: 1.0}, plain: {select: top, score: plain_rows, fraction: 1.0}}"
    out = work / "probe"
    cmd = [
        PY, "-m", "pipeline.cli", "probe", f"pool={pool}", f"filters.tokenizer={sp}", f"budget_tokens={budget}",
        f"seeds={seeds}", "halves=[]", "filters_arm=false", f"arms={arms}", f"output.dir={out}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"probe failed: {done.stderr.strip()[-2000:]}")
    printed = done.stdout
    seconds = time.perf_counter() - t0
    result = json.loads((out / "probe.json").read_text())
    return [" ".join(cmd[1:]), printed.strip(), f"({seconds:.0f} s)"], dict(result=result, budget=budget)


def paired(result: dict) -> list[str]:
    """aware − plain per eval set, paired by seed (probe.json's per-run bits/byte)."""
    from scipy import stats

    lines = []
    runs = result.get("runs") or []
    for name in sorted({e for r in runs for e in r["bpb"]}):
        by = {(r["arm"], r["seed"]): r["bpb"][name] for r in runs if r["bpb"].get(name) is not None}
        seeds = sorted({s for a, s in by if a == "aware"} & {s for a, s in by if a == "plain"})
        d = np.array([by[("aware", s)] - by[("plain", s)] for s in seeds])
        if len(d) > 1:
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            lines.append(
                f"{name}: aware − plain {d.mean():+.4f} bits/byte [95% CI {d.mean() - half:+.4f}, {d.mean() + half:+.4f}], {len(d)} seeds"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="rows per strength")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--vocab", type=int, default=4000, help="SentencePiece pieces of the student tokenizer")
    ap.add_argument("--dtype", default="auto", help="teacher.dtype (auto: bf16 on AMX CPUs, ~2x fp32 here)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3, help="probe students per arm")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_token_aware"))
    ap.add_argument("--results", default="token_aware.md", help="file name under bench/results/")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): strengths 0 and 2, 2 rows each, 48 new tokens, "
        "filters.min_words=5, a 1,000-piece student tokenizer, no probe, a temporary --work, no write",
    )
    args = ap.parse_args()
    args.overrides = []
    if args.quick:
        args.n, args.strengths, args.max_new_tokens, args.vocab = 2, [0.0, 2.0], 48, 1000
        args.no_probe = args.no_write = True
        # 48 tokens make fewer words than filters.min_words: every row would be too_short, dropped unscored
        args.overrides = ["filters.min_words=5"]
        with tempfile.TemporaryDirectory(prefix="litho-bench-token-aware-") as tmp:
            args.work = tmp
            bench(args)
    else:
        bench(args)


def bench(args) -> None:
    from generators.teachers.models import default_cache_dir, load_tokenizer

    started, load_before = time.perf_counter(), uptime()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sp = str(train_sentencepiece(work / f"sp{args.vocab}.model", args.vocab))
    teacher_tok = load_tokenizer(TEACHER)
    table_lines, tables = table_section(
        teacher_tok,
        {f"(a) SentencePiece {args.vocab}": sp, "(b) teacher's own": TEACHER},
        default_cache_dir(),
    )
    sp_table = tables[f"(a) SentencePiece {args.vocab}"][0]
    own_bias = ta.bias_vector(
        tables["(b) teacher's own"][0], ta.TokenAware(max(args.strengths), TEACHER), len(teacher_tok)
    )
    runs, seconds = {}, {}
    for s in args.strengths:
        out = work / f"strength-{s:g}"
        seconds[s] = generate(out, args.n, s, sp, args.dtype, args.max_new_tokens, args.overrides)
        runs[s] = run_metrics(out, sp_table)
        print(
            f"strength {s:g}: {seconds[s]:.0f} s, {json.dumps({k: v for k, v in runs[s].items() if k not in ('texts', 'n_tokens')})}",
            flush=True,
        )
    own = teacher_view(runs[args.strengths[0]], [t for r in [runs[args.strengths[0]]] for t in r["texts"]])

    head = (
        "| target | strength | rows | kept by default filters | student chars/token | fertility | byte-fallback rate "
        "| bits/byte (scorer) | teacher tokens | student tokens | mean table cost per teacher token | wall s |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in args.strengths:
        m = runs[s]
        rows.append(
            f"| (a) SP {args.vocab} | {s:g} | {m['rows']} | {m['kept']:.0%} | {m['chars_per_token']:.3f} | "
            f"{m['fertility']:.3f} | {m['byte_fallback_rate']:.4f} | {m['bits_per_byte']:.3f} | {m['teacher_tokens']:,} | "
            f"{m['target_tokens']:,} | {m['mean_cost']:.3f} | {seconds[s]:.0f} |"
        )
    m0 = runs[args.strengths[0]]
    rows.append(
        f"| (b) teacher's own | any (bias max abs {float(np.abs(own_bias).max()):g}) | {m0['rows']} | {m0['kept']:.0%} | "
        f"{own['chars_per_token']:.3f} | {own['fertility']:.3f} | {own['byte_fallback_rate']:.4f} | {m0['bits_per_byte']:.3f} | "
        f"{m0['teacher_tokens']:,} | – | 1.000 | – |"
    )
    probe_lines, verdict = ([], [])
    if not args.no_probe:
        probe_lines, p = probe(work, runs, sp, args.seeds)
        verdict = paired(p["result"]) + [f"budget {p['budget']:,} student tokens per arm"]
    total = time.perf_counter() - started
    text = "\n".join(
        [
            "# Token-aware generation (bench/bench_token_aware.py)",
            "",
            f"Command: `flock /tmp/litho-bench.lock .venv/bin/python bench/bench_token_aware.py "
            f"--n {args.n} --strengths {' '.join(f'{s:g}' for s in args.strengths)} --dtype {args.dtype} "
            f"--seeds {args.seeds} --work {args.work} --results {args.results}`",
            f"Teacher: {TEACHER} (SmolLM2-135M-Instruct), teacher.dtype={args.dtype}, default plan and sampling, "
            f"seed 0, max_new_tokens {args.max_new_tokens}. Total {total / 60:.1f} min.",
            f"Load before: `{load_before}`",
            f"Load after: `{uptime()}`",
            "",
            "## Cost table and its approximation (per-token sum vs whole texts)",
            "",
            *table_lines,
            "",
            "## Generation at each strength (target (a) steers; rows = data/ + rejected/)",
            "",
            *rows,
            "",
            "The default filters are rules on words and repeats, not on the tokenizer: the kept share is the "
            "same for either target.",
            "",
            "## One request at every strength (kept rows, first characters)",
            "",
            *examples(work, args.strengths),
            "",
            *(["## Probe: aware (largest strength) vs plain (strength 0), equal student-token budgets", "",
               "```", *probe_lines, "```", "", *verdict, ""] if probe_lines else []),
        ]
    )  # fmt: skip
    print(text)
    if not args.no_write:
        path = ROOT / "bench" / "results" / args.results
        path.write_text(text + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
