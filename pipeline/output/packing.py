"""Packed token shards for causal-LM pretraining: fixed-length rows of the target tokenizer's ids.

Kept documents of each split are taken in id order (a k-way merge of the shards, each sorted by id),
each document's target-tokenizer ids (no special tokens) followed by EOS, concatenated and cut into
rows of exactly ``seq_len`` tokens. A row's ``doc_offsets`` are the positions where a document starts
inside it (a row that begins mid-document has no 0), so a loader can reset positions or mask
attention at document boundaries. The tail that does not fill a last row is dropped and counted.
Same kept rows and tokenizer give byte-identical shards, and a rerun that would write the same
shards leaves the published ones untouched.

Packing runs as Ray tasks. The token ids come from the run itself where it computed them: the
``token_metrics`` stage keeps them (``filters.scores.token_metrics.TOKEN_IDS``) and the shard writer
stores them beside each data shard under ``.litho/tokens/`` (id order, 4 bytes a token); a shard
without them (``litho dedup``, an older run) is tokenized by a task of its own. One task per split
then merges its shards' ids in id order and cuts the rows with numpy (the cut is sequential by
nature: where a row starts depends on every earlier document).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from generators.errors import ConfigError

log = logging.getLogger(__name__)
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_offsets", pa.list_(pa.int32()))])
TOKENS = Path(".litho") / "tokens"  # per data shard: id, tokens (int32 bytes), in the shard's id order
TOKENS_SCHEMA = pa.schema([("id", pa.string()), ("tokens", pa.binary())])


class Packer:
    """Cuts a stream of documents into rows of ``seq_len`` tokens, each document followed by ``eos``.

    Args:
        seq_len: Tokens per row.
        eos: End-of-sequence id put after every document.
    """

    def __init__(self, seq_len: int, eos: int):
        self.seq_len, self.eos = seq_len, eos
        self.buffer = np.zeros(0, np.int32)
        self.starts = np.zeros(0, np.int64)  # where documents start inside the buffer
        self.documents = self.document_tokens = 0

    def add(self, docs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Append documents; return the rows completed, ``(rows, seq_len)``, and each row's doc offsets."""
        if not docs:
            return np.zeros((0, self.seq_len), np.int32), []
        lens = np.array([len(d) + 1 for d in docs], dtype=np.int64)
        eos = np.array([self.eos], np.int32)
        flat = np.concatenate([self.buffer, *(x for d in docs for x in (np.asarray(d, np.int32), eos))])
        starts = np.concatenate([self.starts, len(self.buffer) + np.cumsum(lens) - lens])
        self.documents += len(docs)
        self.document_tokens += int(lens.sum())
        m = len(flat) // self.seq_len
        cut = m * self.seq_len
        inside = starts[starts < cut]
        bounds = np.searchsorted(inside, np.arange(m + 1) * self.seq_len)
        offsets = [(inside[bounds[r] : bounds[r + 1]] - r * self.seq_len).astype(np.int32) for r in range(m)]
        self.buffer, self.starts = flat[cut:], starts[starts >= cut] - cut
        return flat[:cut].reshape(m, self.seq_len), offsets

    @property
    def tail(self) -> int:
        return len(self.buffer)


def pack_tokens(
    docs: Iterator[list[int]], seq_len: int, eos_id: int
) -> Iterator[tuple[list[int], list[int]]]:
    """Yield ``(input_ids, doc_offsets)`` rows of exactly ``seq_len`` tokens; the returned
    generator's ``StopIteration.value`` is the number of tail tokens dropped."""
    packer = Packer(seq_len, eos_id)
    for ids in docs:
        rows, offsets = packer.add([np.asarray(ids, np.int32)])
        for row, offset in zip(rows, offsets):
            yield row.tolist(), offset.tolist()
    return packer.tail


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_id is None or tokenizer.eos_id < 0:
        raise ConfigError(
            "filters.tokenizer: it has no end-of-sequence token to put between packed documents"
        )
    return int(tokenizer.eos_id)


def token_table(ids: list[str], token_ids) -> pa.Table:
    """A shard's token file: ids and their token ids as int32 bytes."""
    blobs = [np.asarray(t, np.int32).tobytes() if not isinstance(t, bytes) else t for t in token_ids]
    return pa.table(
        {"id": pa.array(ids, pa.string()), "tokens": pa.array(blobs, pa.binary())}, schema=TOKENS_SCHEMA
    )


def tokenize_shard(shard: str, target: str, tokenizer_spec: str, cache_dir=None, allow_network: bool = False,
                   batch: int = 1024) -> str:  # fmt: skip
    """Task: write the token file of a data shard that has none (ids in the shard's id order)."""
    from filters.tokenizers import load_target_tokenizer

    tokenizer = load_target_tokenizer(tokenizer_spec, "filters.tokenizer", allow_network, cache_dir)
    tables = []
    for part in pq.ParquetFile(shard).iter_batches(batch_size=batch, columns=["id", "text"]):
        texts = [str(t) for t in part.column("text").to_pylist()]
        tables.append(token_table(part.column("id").to_pylist(), tokenizer.encode(texts) if texts else []))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(target).with_name(f".{Path(target).name}.tmp")
    pq.write_table(
        pa.concat_tables(tables) if tables else TOKENS_SCHEMA.empty_table(), tmp, compression="zstd"
    )
    tmp.replace(target)
    return target


def docs_in_id_order(files: list[Path], batch_size: int = 4096) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, token ids)`` of every row of the token ``files`` (each sorted by id), merged into one id order."""

    def rows(path: Path):
        for part in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            for rid, blob in zip(part.column("id").to_pylist(), part.column("tokens").to_pylist()):
                yield rid, np.frombuffer(blob, np.int32)

    return heapq.merge(*(rows(f) for f in files), key=lambda row: row[0])


def pack_split(files: list[str], directory: str, split: str, seq_len: int, eos: int, rows_per_shard: int,
               chunk: int = 2048) -> dict:  # fmt: skip
    """Task: pack one split's token files into ``directory/{split}-NNNNN-of-NNNNN.parquet``; its summary."""
    directory = Path(directory)
    packer = Packer(seq_len, eos)
    shards: list[Path] = []
    pending_rows: list[np.ndarray] = []
    pending_offsets: list[np.ndarray] = []

    def flush(force: bool = False) -> None:
        nonlocal pending_rows, pending_offsets
        rows = np.concatenate(pending_rows) if pending_rows else np.zeros((0, seq_len), np.int32)
        while len(rows) >= rows_per_shard or (force and len(rows)):
            take = min(rows_per_shard, len(rows))
            shards.append(_write(directory, split, len(shards), rows[:take], pending_offsets[:take]))
            rows, pending_offsets = rows[take:], pending_offsets[take:]
        pending_rows = [rows]

    docs: list[np.ndarray] = []
    for _, ids in docs_in_id_order([Path(f) for f in files]):
        docs.append(ids)
        if len(docs) == chunk:
            rows, offsets = packer.add(docs)
            pending_rows.append(rows)
            pending_offsets += offsets
            flush()
            docs = []
    rows, offsets = packer.add(docs)
    pending_rows.append(rows)
    pending_offsets += offsets
    flush(force=True)
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
    return {
        "documents": packer.documents,
        "document_tokens": packer.document_tokens,
        "rows": sum(s["rows"] for s in named),
        "tail_tokens_dropped": packer.tail,
        "shards": named,
    }


def _write(directory: Path, split: str, index: int, rows: np.ndarray, offsets: list[np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    n, width = rows.shape
    ids = pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32) * width), pa.array(rows.reshape(-1))
    )
    bounds = np.concatenate([[0], np.cumsum([len(o) for o in offsets])]).astype(np.int32)
    flat = np.concatenate(offsets) if offsets else np.zeros(0, np.int32)
    docs = pa.ListArray.from_arrays(pa.array(bounds), pa.array(flat.astype(np.int32), pa.int32()))
    table = pa.Table.from_arrays([ids, docs], schema=SCHEMA)
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
    """Pack ``out/data`` into ``out/packed`` (staged, then swapped in unless nothing changed), in Ray tasks:
    one per data shard without a token file, then one per split."""
    import ray

    from filters.tokenizers import load_target_tokenizer
    from pipeline.output.snapshot import Snapshot

    eos = _eos_id(load_target_tokenizer(tokenizer_spec, "filters.tokenizer", allow_network, cache_dir))
    snapshot = Snapshot(out)
    staged = snapshot.staging / "packed"
    summary = {"seq_len": seq_len, "tokenizer": tokenizer_spec, "eos_id": eos, "splits": {}}
    tokenize = ray.remote(num_cpus=0.5)(tokenize_shard)
    pack = ray.remote(num_cpus=0.25)(pack_split)
    files = {}
    for split in ("train", "validation"):
        shards = sorted((out / "data").glob(f"{split}-*.parquet"))
        files[split] = [out / TOKENS / s.name for s in shards]
        missing = [(str(s), str(t)) for s, t in zip(shards, files[split]) if not t.is_file()]
        ray.get([tokenize.remote(s, t, tokenizer_spec, cache_dir, allow_network) for s, t in missing])
    jobs = {
        split: pack.remote([str(f) for f in fs], str(staged), split, seq_len, eos, rows_per_shard)
        for split, fs in files.items()
        if fs
    }
    summary["splits"] = dict(zip(jobs, ray.get(list(jobs.values()))))
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
