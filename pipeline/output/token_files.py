"""Token files that pretraining trainers read as they are: Megatron, nanotron (datatrove) and OLMo layouts.

One :class:`ShardWriter` streams one shard's documents (each a run of token ids, optionally with a loss
mask) into the files of every requested format; a batch of documents arrives as one flat id array and
its lengths, so nothing is done per token in Python. Layouts, each as its reference reader takes it:

* ``megatron``: ``<prefix>.bin`` (the ids) and ``<prefix>.idx``, the index megatron-core's
  ``IndexedDataset`` reads (megatron/core/datasets/indexed_dataset.py): the header ``MMIDIDX\\x00\\x00``,
  version 1 (``<Q``), the dtype code (``<B``), the sequence count and the document-index count (``<Q``
  each), then every sequence's length (int32), byte offset (int64) and the document indices (int64,
  ``0..n``: one sequence per document). uint16 when the vocabulary is under 65,500, else int32, as
  ``DType.optimal_dtype`` chooses.
* ``nanotron``: datatrove's tokenized files (datatrove/pipeline/tokens/tokenizer.py ``TokenizedFile``):
  ``<name>.ds`` (little-endian uint16, or uint32 above 65,536 ids), ``<name>.ds.index`` (every
  document's end in tokens, uint64) and ``<name>.ds.metadata`` (``tokenizer|bytes per token``, the
  token count, the count in words); a loss mask goes to ``<name>.ds.loss``, one byte per token.
* ``numpy``: the Dolma/OLMo layout OLMo-core's numpy datasets memory-map (olmo_core/data/utils.py):
  ``<name>.npy``, the raw ids without a header (the smallest unsigned type that holds the vocabulary),
  and ``<name>.csv.gz``, one ``start,end`` line per document; a loss mask goes to
  ``<name>.mask.npy`` (bool), the file OLMo-core's ``label_mask_paths`` take.

Written here with numpy rather than through megatron-core's ``IndexedDatasetBuilder`` or datatrove's
writers: those add one document per Python call from a torch tensor or a list (and megatron-core at
run time brings its own pins of torch-side packages), while a shard here arrives as whole arrays.
tests/pipeline/test_token_files.py holds every layout against its real reader (megatron-core's
``IndexedDataset`` and ``GPTDataset``, datatrove's ``DatatroveFileDataset``, OLMo's boundaries).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np
import xxhash

FORMATS = ("megatron", "nanotron", "numpy")
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int32): 4, np.dtype(np.uint16): 8}


def dtypes(vocab_size: int) -> dict[str, np.dtype]:
    """The token dtype of each format for a vocabulary of ``vocab_size`` ids, as each reference picks it."""
    olmo = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if vocab_size - 1 <= np.iinfo(t).max)
    return {
        "megatron": np.dtype(np.uint16 if vocab_size < 65500 else np.int32),  # DType.optimal_dtype
        "nanotron": np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32),  # datatrove token_size
        "numpy": np.dtype(olmo),  # OLMo-core NumpyDatasetConfig.get_dtype
    }


def files_of(fmt: str, name: str, split: str, masks: bool = False) -> list[str]:
    """The files (relative to the format's folder) that ``fmt`` writes for shard ``name``."""
    if fmt == "megatron":
        files = [f"{name}.bin", f"{name}.idx"]
        return files + ([f"{name}-loss_mask.bin", f"{name}-loss_mask.idx"] if masks else [])
    if fmt == "nanotron":
        files = [f"{split}/{name}.ds", f"{split}/{name}.ds.index", f"{split}/{name}.ds.metadata"]
        return files + ([f"{split}/{name}.ds.loss"] if masks else [])
    return [f"{name}.npy", f"{name}.csv.gz"] + ([f"{name}.mask.npy"] if masks else [])


class _Stream:
    """An open data file that hashes what it writes (the manifest's digest without a second read)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.handle, self.hash = path, open(path, "wb"), xxhash.xxh3_64()

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.hash.update(data)

    def close(self) -> str:
        self.handle.close()
        return self.hash.hexdigest()


class ShardWriter:
    """Streams one shard's documents into the token files of ``formats`` under ``root/<format>/``.

    Args:
        root: The folder that holds one folder per format (a staging folder while the run writes).
        name: The shard's name (``train-00000-of-00002``): the stem of every file.
        split: ``train`` or ``validation`` (nanotron reads one folder per split).
        formats: Some of :data:`FORMATS`.
        vocab_size: Ids the tokenizer can give: picks each format's dtype.
        eos: The id put after every document, or None for none.
        tokenizer: The tokenizer's name for datatrove's metadata file.
        masks: Documents come with a loss mask (SFT), written beside the ids.
    """

    def __init__(self, root: Path, name: str, split: str, formats, vocab_size: int, eos: int | None,
                 tokenizer: str, masks: bool = False):  # fmt: skip
        self.root, self.name, self.split, self.formats = Path(root), name, split, list(formats)
        self.eos, self.tokenizer, self.masks = eos, tokenizer, masks
        self.dtypes = {f: dtypes(vocab_size)[f] for f in self.formats}
        # Formats that share a dtype share the bytes: written once, hard-linked to the others at close.
        self.ids: dict[np.dtype, _Stream] = {}
        for fmt, dt in self.dtypes.items():
            if dt not in self.ids:
                self.ids[dt] = _Stream(self._data_path(fmt))
        self.mask = _Stream(self._data_path(self.formats[0], mask=True)) if masks else None
        self.lengths: list[np.ndarray] = []

    def _data_path(self, fmt: str, mask: bool = False) -> Path:
        rel = files_of(fmt, self.name, self.split, masks=True)
        return self.root / fmt / rel[{"megatron": 2, "nanotron": 3, "numpy": 2}[fmt] if mask else 0]

    def add(self, flat: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Append documents: ``flat`` holds their ids end to end, ``lengths`` each one's count, ``mask``
        (with ``masks``) 1 where a token is trained on. The EOS is appended here, with mask 1."""
        lengths = np.asarray(lengths, np.int64)
        if self.eos is not None and len(lengths):
            ends = np.cumsum(lengths + 1) - 1  # where each document's EOS lands
            keep = np.ones(len(flat) + len(lengths), bool)
            keep[ends] = False
            out = np.empty(len(keep), np.int64)
            out[keep], out[ends] = flat, self.eos
            if mask is not None:
                full = np.ones(len(keep), np.uint8)
                full[keep] = mask
                mask = full
            flat, lengths = out, lengths + 1
        for dt, stream in self.ids.items():
            stream.write(np.asarray(flat).astype(dt, copy=False).tobytes())
        if self.mask is not None:
            self.mask.write(np.asarray(mask, np.uint8).tobytes())
        self.lengths.append(lengths)

    def close(self) -> dict:
        """Write the indexes; return ``{documents, tokens, files: {path under root: xxh3 digest}}``."""
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        digests: dict[str, str] = {}
        data = {dt: stream.close() for dt, stream in self.ids.items()}
        mask = self.mask.close() if self.mask is not None else None
        mask_source = self._data_path(self.formats[0], mask=True) if self.masks else None
        for fmt, dt in self.dtypes.items():
            rel = files_of(fmt, self.name, self.split, masks=self.masks)
            self._link(self.ids[dt].path, self.root / fmt / rel[0])
            digests[f"{fmt}/{rel[0]}"] = data[dt]
            if self.masks:
                target = self._data_path(fmt, mask=True)
                self._link(mask_source, target)
                digests[f"{fmt}/{target.relative_to(self.root / fmt)}"] = mask
            for path, blob in self._indexes(fmt, dt, lengths).items():
                path.write_bytes(blob)
                digests[str(path.relative_to(self.root))] = xxhash.xxh3_64_hexdigest(blob)
        return {
            "documents": len(lengths),
            "tokens": int(lengths.sum()),
            "files": dict(sorted(digests.items())),
        }

    @staticmethod
    def _link(source: Path, target: Path) -> None:
        if source != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)

    def _indexes(self, fmt: str, dt: np.dtype, lengths: np.ndarray) -> dict[Path, bytes]:
        folder = self.root / fmt
        if fmt == "megatron":
            found = {folder / f"{self.name}.idx": megatron_index(lengths, dt)}
            if self.masks:
                found[folder / f"{self.name}-loss_mask.idx"] = megatron_index(lengths, np.dtype(np.uint8))
            return found
        if fmt == "nanotron":
            stem = folder / self.split / f"{self.name}.ds"
            ends = np.cumsum(lengths).astype("<u8")
            meta = f"{self.tokenizer}|{dt.itemsize}\n{int(lengths.sum())}\n{_metric(int(lengths.sum()))}"
            return {stem.with_name(stem.name + ".index"): ends.tobytes(), stem.with_name(stem.name + ".metadata"): meta.encode()}  # fmt: skip
        return {folder / f"{self.name}.csv.gz": boundaries_csv(lengths)}


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The ``.idx`` of documents of ``lengths`` tokens of ``dtype``, one sequence per document."""
    n = len(lengths)
    sizes = np.asarray(lengths, "<i4")
    pointers = np.concatenate([[0], np.cumsum(sizes.astype(np.int64) * dtype.itemsize)[:-1]]) if n else []
    head = MEGATRON_HEADER + struct.pack("<Q", 1) + struct.pack("<B", MEGATRON_CODES[dtype])
    head += struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    return (
        head
        + sizes.tobytes()
        + np.asarray(pointers, "<i8").tobytes()
        + np.arange(n + 1, dtype="<i8").tobytes()
    )


def boundaries_csv(lengths: np.ndarray) -> bytes:
    """OLMo's document boundaries: gzip of ``start,end`` lines, with a fixed header (same bytes every run)."""
    ends = np.cumsum(lengths)
    text = "".join(f"{s},{e}\n" for s, e in zip(ends - lengths, ends))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(text.encode())
    return buffer.getvalue()


def _metric(count: int) -> str:
    """A token count in words (datatrove's third metadata line, e.g. ``1.2 MT``)."""
    for power, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if count >= 10**power:
            return f"{count / 10**power:.3g} {prefix}T"
    return f"{count} T"
