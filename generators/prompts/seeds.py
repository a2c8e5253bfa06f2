"""Seed corpora: existing texts that generators rewrite or build on (rephrase, dense, instruct, layered).

A seed corpus is a Parquet file, a JSONL file, a directory of such files, or a Hugging Face
``datasets`` directory written by ``save_to_disk``. Every seed keeps the link to where it came
from (file, row index, optional id column, chunk index) and a SHA-256 of the exact text the
teacher saw, so a generated row can always be traced back to its source.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from generators.errors import ConfigError
from generators.text import SENTENCE_BREAK, jsonl_records

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Seed:
    """One seed text: a whole document or one chunk of a long one."""

    source_file: str
    source_row: int
    source_id: str
    source_chunk: int
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def columns(self) -> dict:
        """The provenance columns every seed-based plan row carries."""
        return {
            "source_file": self.source_file,
            "source_row": self.source_row,
            "source_id": self.source_id,
            "source_chunk": self.source_chunk,
            "source_sha256": self.sha256,
            "source_text": self.text,
        }


def chunk_text(text: str, max_words: int) -> list[str]:
    """Split ``text`` at sentence or paragraph boundaries into chunks of at most ``max_words`` words.

    A single sentence longer than ``max_words`` is cut at a word boundary.
    """
    chunks: list[str] = []
    current: list[str] = []
    for sentence in (s.strip() for s in SENTENCE_BREAK.split(text)):
        words = sentence.split()
        while len(words) > max_words:
            if current:
                chunks.append(" ".join(current))
                current = []
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            chunks.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _rows(path: Path, column: str, id_column: str | None, split: str) -> Iterator[tuple[str, int, str, str]]:
    """Yield ``(file, row index, id, text)`` in file order."""
    if _is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ConfigError(f"generator.seed_split={split}: {path} has splits {sorted(data)}; pick one")
            data = data[split]
        _check_columns(data.column_names, column, id_column, path)
        ids = data[id_column] if id_column else [""] * len(data)
        for i, (text, rid) in enumerate(zip(data[column], ids)):
            yield str(path), i, str(rid), text
        return
    for file in _files(path):
        if file.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                names = pq.read_schema(file).names
                _check_columns(names, column, id_column, file)
                table = pq.read_table(file, columns=[column] + ([id_column] if id_column else []))
            except (OSError, pa.ArrowInvalid) as exc:
                raise ConfigError(
                    f"generator.seed_file: {file} is not a readable Parquet file ({exc}); rewrite or remove it"
                ) from None
            texts = table.column(column).to_pylist()
            ids = table.column(id_column).to_pylist() if id_column else [""] * len(texts)
        else:
            records = jsonl_records(file, "generator.seed_file")
            _check_columns(
                set().union(*(r.keys() for r in records)) if records else [], column, id_column, file
            )
            texts = [r.get(column) for r in records]
            ids = [r.get(id_column, "") if id_column else "" for r in records]
        for i, (text, rid) in enumerate(zip(texts, ids)):
            yield str(file), i, "" if rid is None else str(rid), text


def _check_columns(names, column: str, id_column: str | None, where: Path) -> None:
    for key, name in (("generator.text_column", column), ("generator.id_column", id_column)):
        if name and name not in names:
            raise ConfigError(f"{key}={name}: no such column in {where}; it has {sorted(names)}")


def load_seeds(
    path: str,
    text_column: str = "text",
    id_column: str | None = None,
    split: str = "train",
    max_words: int = 250,
    min_words: int = 30,
    max_docs: int | None = None,
) -> list[Seed]:
    """Read a seed corpus and cut it into seeds of ``min_words`` to ``max_words`` words; a chunk seen
    before (same text) is skipped, keeping its first occurrence.

    Raises:
        ConfigError: the path is missing or unreadable, has no such column, or yields no seed.
    """
    source = Path(str(path)).expanduser()
    if not path or not source.exists():
        raise ConfigError(
            f"generator.seed_file={path}: no such file or directory; give a Parquet or JSONL file, a directory "
            "of them, or a datasets directory written by save_to_disk"
        )
    if source.is_dir() and not _is_saved_dataset(source) and not _files(source):
        raise ConfigError(f"generator.seed_file={path}: no .parquet or .jsonl files in this directory")
    seeds: list[Seed] = []
    skipped: dict[str, int] = {}
    seen: set[str] = (
        set()
    )  # a repeated chunk (copied paragraphs, duplicate documents) would repeat a request id
    for docs, (file, row, rid, text) in enumerate(_rows(source, text_column, id_column, split)):
        if max_docs is not None and docs >= max_docs:
            break
        if not isinstance(text, str):
            skipped[file] = skipped.get(file, 0) + 1
            continue
        for k, chunk in enumerate(chunk_text(text, max_words)):
            if len(chunk.split()) >= min_words and chunk not in seen:
                seen.add(chunk)
                seeds.append(Seed(file, row, rid, k, chunk))
    for file, count in skipped.items():  # said, not silent: a row without text cannot become a seed
        log.warning(
            "generator.seed_file: %d rows of %s have no text in %s (null): skipped", count, file, text_column
        )
    if not seeds:
        raise ConfigError(
            f"generator.seed_file={path}: no text of at least {min_words} words in column {text_column}; "
            "check generator.text_column or lower generator.min_words"
        )
    return seeds


@dataclass(frozen=True)
class SeedSource:
    """Where a generator's seeds come from: the ``generator.seed_file`` keys, read on demand.

    Generators keep this small value and call ``load()`` when they plan, not in ``__init__``: the
    generator object travels to Ray actors, the seed texts should not.
    """

    path: str | None
    text_column: str = "text"
    id_column: str | None = None
    split: str = "train"
    max_words: int = 250
    min_words: int = 30
    max_docs: int | None = None

    def load(self) -> list[Seed]:
        return load_seeds(
            self.path,
            self.text_column,
            self.id_column,
            self.split,
            self.max_words,
            self.min_words,
            self.max_docs,
        )


def subject_columns(subject) -> dict:
    """The plan-row columns for what a request is about: a seed (its provenance, no topic) or a built-in
    topic (``generators.prompts.plan.Topic``)."""
    if isinstance(subject, Seed):
        return {"topic": "", "domain": "", "subdomain": "", **subject.columns()}
    return {"topic": subject.topic, "domain": subject.domain, "subdomain": subject.subdomain}
