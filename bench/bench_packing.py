"""Packing throughput: pipeline/output/packing.pack_split over 4 id-sorted shards of man-page documents.

Packing is one Ray task per split (k-way merge of the shards' token files by id, rows cut with numpy),
so its tokens per second bound how large a corpus `output.pack_seq_len` suits. Here both task
functions run in this process, no Ray: ``tokenize_shard`` writes each shard's token file (what a run
does only for shards without stored ids), timed apart, then ``pack_split`` packs them. Usage:

    python bench/bench_packing.py [--docs 4000] [--seq-len 2048]
    python bench/bench_packing.py --quick     # smoke run: 400 documents
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters.tokenizers import load_target_tokenizer  # noqa: E402
from pipeline.output.packing import _eos_id, pack_split, tokenize_shard  # noqa: E402
from tests.conftest import _man_page_text  # noqa: E402


def pack(rows: list[dict], work: Path, seq_len: int) -> tuple[dict, float, float]:
    """Write 4 id-sorted shards under ``work``, tokenize them, pack them; ``(summary, pack s, tokenize s)``."""
    for k in range(4):
        part = sorted(rows[k::4], key=lambda r: r["id"])
        pq.write_table(pa.Table.from_pylist(part), work / f"train-{k:05d}-of-00004.parquet")
    started = time.perf_counter()
    tokens = [
        tokenize_shard(str(shard), str(work / "tokens" / shard.name), "embedded:smollm2")
        for shard in sorted(work.glob("train-*.parquet"))
    ]
    tokenize_s = time.perf_counter() - started
    eos = _eos_id(load_target_tokenizer("embedded:smollm2"))
    started = time.perf_counter()
    summary = pack_split(tokens, str(work / "packed"), "train", seq_len, eos, 50000)
    return summary, time.perf_counter() - started, tokenize_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): 400 documents"
    )
    args = parser.parse_args()
    n_docs = 400 if args.quick else args.docs

    texts = _man_page_text(limit=40)
    rows = [{"id": f"{i:08x}", "text": texts[i % len(texts)]} for i in range(n_docs)]
    with tempfile.TemporaryDirectory(prefix="litho-bench-pack-") as tmp:
        summary, seconds, tokenize_s = pack(rows, Path(tmp), args.seq_len)
    print(
        f"documents {summary['documents']}, document tokens {summary['document_tokens']}, rows {summary['rows']} "
        f"of {args.seq_len}, tail dropped {summary['tail_tokens_dropped']}"
    )
    print(
        f"packing: {seconds:.1f} s, {summary['document_tokens'] / seconds / 1e6:.2f} M tokens/s "
        f"(one process); tokenizing the shards before it, not timed in that: {tokenize_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
