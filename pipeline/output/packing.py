"""Packed token shards for causal-LM pretraining: fixed-length rows of the target tokenizer's ids.

Kept documents of each split are read from ``data/`` in id order (a k-way merge of the shards,
each sorted by id), tokenized with the target tokenizer (no special tokens), each followed by
EOS, concatenated and cut into rows of exactly ``seq_len`` tokens. A row's ``doc_offsets`` are
the positions where a document starts inside it (a row that begins mid-document has no 0), so a
loader can reset positions or mask attention at document boundaries. The tail that does not
fill a last row is dropped and counted. Same kept rows and tokenizer give byte-identical shards,
and a rerun that would write the same shards leaves the published ones untouched.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from generators.errors import ConfigError

log = logging.getLogger(__name__)
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_offsets", pa.list_(pa.int32()))])


def docs_in_id_order(files: list[Path], batch_size: int = 1024) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every row of ``files`` (each sorted by id), merged into one id order."""

    def rows(path: Path):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["id", "text"]):
            yield from zip(batch.column("id").to_pylist(), batch.column("text").to_pylist())

    return heapq.merge(*(rows(f) for f in files), key=lambda row: row[0])


def pack_tokens(
    docs: Iterator[list[int]], seq_len: int, eos_id: int
) -> Iterator[tuple[list[int], list[int]]]:
    """Yield ``(input_ids, doc_offsets)`` rows of exactly ``seq_len`` tokens; the returned
    generator's ``StopIteration.value`` is the number of tail tokens dropped."""
    buffer: list[int] = []
    starts: list[int] = []
    for ids in docs:
        starts.append(len(buffer))
        buffer.extend(ids)
        buffer.append(eos_id)
        while len(buffer) >= seq_len:
            yield buffer[:seq_len], [s for s in starts if s < seq_len]
            buffer = buffer[seq_len:]
            starts = [s - seq_len for s in starts if s >= seq_len]
    return len(buffer)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_id is None or tokenizer.eos_id < 0:
        raise ConfigError(
            "filters.tokenizer: it has no end-of-sequence token to put between packed documents"
        )
    return int(tokenizer.eos_id)


def pack_split(
    files: list[Path],
    directory: Path,
    split: str,
    seq_len: int,
    tokenizer,
    rows_per_shard: int,
    encode_batch: int = 256,
) -> dict:
    """Pack one split into ``directory/{split}-NNNNN-of-NNNNN.parquet``; return its summary."""
    eos = _eos_id(tokenizer)
    stats = {"documents": 0, "document_tokens": 0}

    def encoded() -> Iterator[list[int]]:
        batch: list[str] = []
        for _, text in docs_in_id_order(files):
            batch.append(text)
            if len(batch) == encode_batch:
                yield from _encode(batch)
                batch = []
        yield from _encode(batch)

    def _encode(texts: list[str]) -> Iterator[list[int]]:
        for ids in tokenizer.encode(texts) if texts else []:
            stats["documents"] += 1
            stats["document_tokens"] += len(ids) + 1
            yield ids

    shards, rows = [], []
    packer = pack_tokens(encoded(), seq_len, eos)
    tail = 0
    while True:
        try:
            rows.append(next(packer))
        except StopIteration as stop:
            tail = stop.value or 0
            break
        if len(rows) == rows_per_shard:
            shards.append(_write(directory, split, len(shards), rows))
            rows = []
    if rows:
        shards.append(_write(directory, split, len(shards), rows))
    named = []
    for i, path in enumerate(shards):
        final = path.with_name(f"{split}-{i:05d}-of-{len(shards):05d}.parquet")
        path.rename(final)
        named.append(
            {
                "file": final.name,
                "split": split,
                "rows": pq.read_metadata(final).num_rows,
                "digest": xxhash.xxh3_64_hexdigest(final.read_bytes()),
            }
        )
    return {**stats, "rows": sum(s["rows"] for s in named), "tail_tokens_dropped": tail, "shards": named}


def _write(directory: Path, split: str, index: int, rows: list[tuple[list[int], list[int]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table({"input_ids": [r[0] for r in rows], "doc_offsets": [r[1] for r in rows]}, schema=SCHEMA)
    path = directory / f".{split}-{index:05d}.parquet"
    pq.write_table(table, path, compression="zstd")
    return path


def pack_run(
    out: Path,
    seq_len: int,
    tokenizer_spec: str,
    rows_per_shard: int,
    cache_dir=None,
    allow_network: bool = False,
) -> dict:
    """Pack ``out/data`` into ``out/packed`` (staged, then swapped in unless nothing changed)."""
    from filters.tokenizers import load_target_tokenizer
    from pipeline.output.snapshot import Snapshot

    tokenizer = load_target_tokenizer(tokenizer_spec, "filters.tokenizer", allow_network, cache_dir)
    snapshot = Snapshot(out)
    staged = snapshot.staging / "packed"
    summary = {"seq_len": seq_len, "tokenizer": tokenizer_spec, "eos_id": _eos_id(tokenizer), "splits": {}}
    for split in ("train", "validation"):
        files = sorted((out / "data").glob(f"{split}-*.parquet"))
        if files:
            summary["splits"][split] = pack_split(files, staged, split, seq_len, tokenizer, rows_per_shard)
    new = {s["file"]: s["digest"] for split in summary["splits"].values() for s in split["shards"]}
    current = out / "packed"
    old = {p.name: xxhash.xxh3_64_hexdigest(p.read_bytes()) for p in current.glob("*.parquet")}
    summary["unchanged"] = bool(new) and new == old
    snapshot.commit(("packed",), summary["unchanged"])
    for split, s in summary["splits"].items():
        log.info(
            "packed %s: %d rows of %d tokens, %d tail tokens dropped",
            split,
            s["rows"],
            seq_len,
            s["tail_tokens_dropped"],
        )
    return summary
