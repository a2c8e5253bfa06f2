"""Decontamination: drop rows that overlap an evaluation set.

A row is contaminated when it shares a word n-gram with an evaluation text (13 words by default,
the practice of GPT-3's and Cosmopedia's benchmark decontamination), or when its MinHash Jaccard
similarity with an evaluation row, over 3-word shingles, reaches ``jaccard``: an evaluation text
with scattered edits keeps no 13 words in a row (one word in ten changed) but most of its short
shingles (Jaccard ≈ 0.54 for that example). LSH with 34 bands of 3 rows finds pairs at Jaccard 0.5
with probability 0.99. Evaluation fields shorter than ``ngram`` words but at least ``min_ngram``
long are matched whole (their full word sequence appearing in the row).

Words are normalised as for dedup (NFKC, lower case, whitespace split) and n-grams hashed with the
MinHash shingle hash (:func:`filters.dedup.minhash.shingle_hashes`); the MinHash part reuses the
cross-run index (:class:`filters.dedup.index.DedupIndex`). The index of a set of evaluation files is
built once and cached under ``cache_dir``, keyed by the files (path, size, mtime) and the settings.

Rows that match get ``drop_reason="contaminated"`` and ``contaminated_by`` = ``<set>:<row>`` of the
first matching evaluation row (n-gram matches before MinHash ones; "" elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filters.dedup.minhash import MinHashConfig, minhash_bands, shingle_hashes
from filters.rules.base import Filter
from generators.errors import ConfigError
from generators.text import normalized_words

log = logging.getLogger(__name__)
VERSION = "decontaminate_v1"
KEY = "dedup.decontaminate"
REASON = "contaminated"


@dataclass(frozen=True)
class EvalSet:
    """One evaluation file and the columns holding its text (e.g. ``[question, answer]``)."""

    path: str
    columns: tuple[str, ...] = ("text",)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @classmethod
    def parse(cls, entry) -> EvalSet:
        """A path, or ``{path: ..., columns: [...]}``."""
        if isinstance(entry, str):
            return cls(entry)
        if isinstance(entry, dict) and set(entry) <= {"path", "columns"} and "path" in entry:
            columns = entry.get("columns") or ["text"]
            return cls(
                str(entry["path"]),
                tuple(str(c) for c in ([columns] if isinstance(columns, str) else columns)),
            )
        raise ConfigError(f"{KEY}.sets: {entry!r}: give a path or {{path: FILE, columns: [text]}}")


def read_set(spec: EvalSet) -> list[list[str]]:
    """The text fields of every row of one evaluation file (Parquet or JSONL).

    Raises:
        ConfigError: a missing or unreadable file, a missing column (named with the file).
    """
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{KEY}.sets: {spec.path}: no such file; give a Parquet or JSONL evaluation set")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            missing = [c for c in spec.columns if c not in names]
            if missing:
                raise ConfigError(f"{KEY}.sets: {path} has no column {missing[0]!r}; it has {sorted(names)}")
            table = pq.read_table(path, columns=list(spec.columns))
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"{KEY}.sets: {path} is not a readable Parquet file ({exc})") from None
        columns = [table.column(c).to_pylist() for c in spec.columns]
        return [["" if v is None else str(v) for v in row] for row in zip(*columns)]
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{KEY}.sets: {path} line {number} is not JSON ({exc})") from None
            missing = [c for c in spec.columns if c not in record]
            if missing:
                raise ConfigError(
                    f"{KEY}.sets: {path} line {number} has no {missing[0]!r}; it has {sorted(record)}"
                )
            rows.append(["" if record[c] is None else str(record[c]) for c in spec.columns])
    return rows


def check_settings(sets, ngram: int, min_ngram: int, jaccard: float | None) -> list[EvalSet]:
    """Parse and check the keys (cheap: the driver calls it before the run)."""
    if not sets:
        raise ConfigError(
            f"{KEY}.sets: give at least one evaluation file, e.g. {KEY}.sets=[/data/test.jsonl]"
        )
    if not isinstance(ngram, int) or ngram < 2:
        raise ConfigError(f"{KEY}.ngram={ngram}: give an integer >= 2 (13 is the usual choice)")
    if not isinstance(min_ngram, int) or not 1 <= min_ngram <= ngram:
        raise ConfigError(f"{KEY}.min_ngram={min_ngram}: give an integer in [1, ngram]")
    if jaccard is not None and not 0 < float(jaccard) <= 1:
        raise ConfigError(f"{KEY}.jaccard={jaccard}: give a Jaccard in (0, 1], or null for n-grams only")
    parsed = [EvalSet.parse(s) for s in sets]
    for spec in parsed:
        if not Path(spec.path).expanduser().is_file():
            raise ConfigError(
                f"{KEY}.sets: {spec.path}: no such file; give a Parquet or JSONL evaluation set"
            )
    return parsed


def _minhash(jaccard: float | None, index_dir: Path | None = None) -> MinHashConfig | None:
    """Whole-row similarity settings: 3-word shingles, 34 bands x 3 rows (see the module docstring)."""
    if jaccard is None:
        return None
    return MinHashConfig(
        ngram=3,
        num_perm=102,
        bands=34,
        rows=3,
        threshold=float(jaccard),
        index_dir=index_dir and str(index_dir),
    )


class DecontaminationIndex:
    """N-gram hashes (sorted) and a MinHash index of the evaluation rows, cached on disk.

    Args:
        sets: The evaluation files.
        ngram: Words per n-gram.
        min_ngram: Shortest evaluation field matched whole.
        jaccard: MinHash Jaccard at or above which a row matches (None: n-grams only).
        cache_dir: Where the index is kept (default ``$LITHO_CACHE``).
    """

    def __init__(
        self,
        sets: list[EvalSet],
        ngram: int = 13,
        min_ngram: int = 8,
        jaccard: float | None = 0.5,
        cache_dir=None,
    ):
        from generators.teachers.models import default_cache_dir

        self.sets, self.ngram, self.min_ngram, self.jaccard = sets, ngram, min_ngram, jaccard
        self.minhash = _minhash(jaccard)
        root = Path(cache_dir or default_cache_dir()) / "decontaminate"
        self.dir = root / self.digest()
        if not (self.dir / "ngrams.npz").is_file():
            self._build()
        data = np.load(self.dir / "ngrams.npz")
        self.hashes, self.owner, self.lengths = data["hashes"], data["owner"], data["lengths"].tolist()
        self.labels = json.loads((self.dir / "labels.json").read_text())
        self.index = None
        if self.minhash is not None:
            from filters.dedup.index import DedupIndex

            self.index = DedupIndex(_minhash(jaccard, self.dir / "minhash")).load()

    def digest(self) -> str:
        parts = [VERSION, self.ngram, self.min_ngram, self.jaccard]
        for spec in self.sets:
            stat = Path(spec.path).expanduser().stat()
            parts.append(
                [str(Path(spec.path).expanduser().resolve()), stat.st_size, stat.st_mtime_ns, spec.columns]
            )
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def _build(self) -> None:
        from filelock import FileLock  # a dependency of transformers / huggingface_hub

        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir) + ".lock"):
            if (self.dir / "ngrams.npz").is_file():
                return
            tmp = self.dir.with_name(self.dir.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            labels, fields, owners = [], [], []
            for spec in self.sets:
                for row, values in enumerate(read_set(spec)):
                    labels.append(f"{spec.name}:{row}")
                    for value in values:
                        fields.append(value)
                        owners.append(len(labels) - 1)
            hashes, owner, lengths = self._field_hashes(fields, np.asarray(owners, dtype=np.int64))
            np.savez(tmp / "ngrams.npz", hashes=hashes, owner=owner, lengths=np.asarray(lengths, np.int64))
            (tmp / "labels.json").write_text(json.dumps(labels))
            if self.minhash is not None:
                from filters.dedup.index import DedupIndex

                whole = [" ".join(values) for spec in self.sets for values in read_set(spec)]
                DedupIndex(_minhash(self.jaccard, tmp / "minhash")).add_run("eval", labels, whole)
            os.replace(tmp, self.dir)
            log.info("decontamination index of %d evaluation rows in %s", len(labels), self.dir)

    def _field_hashes(self, fields: list[str], owners: np.ndarray):
        """Sorted hashes of every field's n-grams (and of whole short fields), with their row."""
        words = [len(normalized_words(f)) for f in fields]
        long = [i for i, n in enumerate(words) if n >= self.ngram]
        parts, who = [], []
        hashes, offsets = shingle_hashes([fields[i] for i in long], self.ngram)
        parts.append(hashes)
        who.append(np.repeat(owners[long], np.diff(offsets)) if long else np.zeros(0, np.int64))
        lengths = sorted({n for n in words if self.min_ngram <= n < self.ngram})
        for n in lengths:  # a short field is one shingle of all its words
            chosen = [i for i, k in enumerate(words) if k == n]
            h, _ = shingle_hashes([fields[i] for i in chosen], n)
            parts.append(h)
            who.append(owners[chosen])
        hashes, owner = np.concatenate(parts).astype(np.uint64), np.concatenate(who).astype(np.int64)
        order = np.argsort(hashes, kind="stable")
        return hashes[order], owner[order], lengths

    def match(self, texts: list[str]) -> np.ndarray:
        """Per text, the label of the first matching evaluation row, or ""."""
        out = np.full(len(texts), "", dtype=object)
        best = np.full(len(texts), np.iinfo(np.int64).max)
        for n in [self.ngram, *self.lengths]:
            hashes, offsets = shingle_hashes(texts, n)
            short = np.array([len(normalized_words(t)) < n for t in texts])
            row = np.repeat(np.arange(len(texts)), np.diff(offsets))
            pos = np.minimum(np.searchsorted(self.hashes, hashes), max(len(self.hashes) - 1, 0))
            hit = (
                (self.hashes[pos] == hashes) & ~short[row]
                if len(self.hashes)
                else np.zeros(len(hashes), bool)
            )
            np.minimum.at(best, row[hit], self.owner[pos[hit]])
        found = best < np.iinfo(np.int64).max
        out[found] = [self.labels[i] for i in best[found]]
        if self.index is not None and (~found).any():
            rest = np.flatnonzero(~found)
            keys = minhash_bands([texts[i] for i in rest], self.index.cfg)
            near = self.index.match(keys, [texts[i] for i in rest])
            for i, label in zip(rest, near):
                if label is not None:
                    out[i] = label
        return out


class Decontaminate(Filter):
    """Rule: drops rows that overlap an evaluation set as ``contaminated`` and adds ``contaminated_by``.

    Args:
        sets: Evaluation files: paths, or ``{path, columns}`` mappings (``columns`` default ``[text]``).
        ngram: Words per n-gram (13: GPT-3's and Cosmopedia's choice).
        min_ngram: Evaluation fields of ``min_ngram`` to ``ngram - 1`` words are matched whole.
        jaccard: Also drop rows whose MinHash Jaccard with an evaluation row reaches this (None: off).
        cache_dir: Where the index is cached.
        text_column: Column holding the text.
    """

    name = "decontaminate"

    @classmethod
    def columns(
        cls,
        sets=None,
        ngram: int = 13,
        min_ngram: int = 8,
        jaccard: float | None = 0.5,
        text_column: str = "text",
        **_,
    ):
        """``(needs, adds)``; checks the keys and that the files exist (cheap: before the run)."""
        check_settings(sets, ngram, min_ngram, jaccard)
        return (text_column,), ("contaminated_by",)

    def __init__(
        self,
        sets=None,
        ngram: int = 13,
        min_ngram: int = 8,
        jaccard: float | None = 0.5,
        cache_dir=None,
        text_column: str = "text",
    ):
        parsed = check_settings(sets, ngram, min_ngram, jaccard)
        self.index = DecontaminationIndex(parsed, ngram, min_ngram, jaccard, cache_dir)
        self.text_column = text_column

    def reasons(self) -> tuple[str, ...]:
        return (REASON,)

    def checks(self, batch: dict):
        kept = np.array(
            [r in ("", None) for r in batch.get("drop_reason", [""] * len(batch[self.text_column]))]
        )
        texts = [str(t) for t in batch[self.text_column]]
        found = np.full(len(texts), "", dtype=object)
        if kept.any():
            found[kept] = self.index.match([t for t, k in zip(texts, kept) if k])
        batch["contaminated_by"] = found
        yield found != "", REASON
