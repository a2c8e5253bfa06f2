"""A near-duplicate benchmark corpus planted in real text from this machine.

Base documents are disjoint word windows of man pages, Python's pydoc topics and Debian copyright
files. Variants copy a base document (or an earlier variant, making chains) and apply random word
edits (substitute, delete, insert, swap) at a per-variant rate drawn from [0, max_rate]; with 5-word
shingles the rates 0-0.12 spread variant-to-parent Jaccard over roughly 0.3-1.0. Base windows that mostly
repeat earlier ones are skipped (``novel``), so natural near duplicates stay rare at any corpus
size; those that remain count in the ground truth (:mod:`bench.truth`) like planted ones.
"""

from __future__ import annotations

import glob
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from filters.dedup.minhash import shingle_hashes

# roff font/char escapes (\fB, \(em, \[rs], \m[blue], \-, \&, \s-1, \*(Aq) that are not words.
_ROFF = re.compile(r"\\f[A-Z1-4]|\\f\(..|\\[fmk*]?\[[^\]]*\]|\\\(..|\\\*\(?..?|\\s[-+]?\d+|\\[-&e|^ 0c%:]")


def _man_page(path: str) -> str:
    with gzip.open(path, "rt", errors="replace") as f:
        lines = [_ROFF.sub(" ", line) for line in f if line.strip() and not line.startswith((".", "'"))]
    return " ".join(lines)


def real_texts(seed: int) -> Iterator[str]:
    """Texts of this machine in a seeded order: pydoc topics, then man pages (all languages) and
    /usr/share/doc files (copyright, changelogs, NEWS)."""
    try:
        import pydoc_data.topics

        yield from (pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    except ImportError:
        pass
    man = glob.glob("/usr/share/man/man[1-8]/*.gz") + glob.glob("/usr/share/man/*/man[1-8]/*.gz")
    docs = glob.glob("/usr/share/doc/*/copyright") + glob.glob("/usr/share/doc/*/*.gz")
    paths = sorted(set(man) | set(docs))
    for i in np.random.default_rng(seed).permutation(len(paths)):
        path = paths[i]
        try:
            if "/man/" in path:
                yield _man_page(path)
            elif path.endswith(".gz"):
                with gzip.open(path, "rt", errors="replace") as f:
                    yield f.read()
            else:
                yield open(path, errors="replace").read()
        except (OSError, EOFError):
            continue


@dataclass
class PlantedCorpus:
    """Documents plus how they were made.

    Attributes:
        ids: Unique ids in output order.
        texts: Document texts.
        parent: Index of the document a variant was edited from; -1 for a base document.
        family: Index of the base document a document descends from (itself for a base).
        rate: Word-edit rate of a variant against its parent; 0 for base documents.
    """

    ids: list[str]
    texts: list[str]
    parent: np.ndarray
    family: np.ndarray
    rate: np.ndarray


class _SeenShingles:
    """A 2^27-bit set of shingle hashes (16 MiB); a false "seen" rate of ~7% at 9M shingles."""

    BITS = 27

    def __init__(self):
        self.bits = np.zeros(1 << (self.BITS - 3), np.uint8)

    def _where(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        hashes, _ = shingle_hashes([" ".join(words)])
        slot = hashes >> np.uint64(64 - self.BITS)
        return (slot >> np.uint64(3)).astype(np.int64), (
            np.uint8(1) << (slot & np.uint64(7)).astype(np.uint8)
        )

    def seen_fraction(self, words: list[str]) -> float:
        byte, bit = self._where(words)
        return float(np.mean((self.bits[byte] & bit) != 0))

    def add(self, words: list[str]) -> None:
        byte, bit = self._where(words)
        np.bitwise_or.at(self.bits, byte, bit)


def base_documents(n: int, seed: int, min_words: int, max_words: int, novel: float | None) -> list[list[str]]:
    """``n`` disjoint windows of ``min_words..max_words`` words from :func:`real_texts`.

    With ``novel``, a window is skipped when more than that share of its shingles already occur in
    earlier windows: sources repeat boilerplate (thousands of gcloud man pages share paragraphs)
    whose pairs grow quadratically with corpus size, which would swamp the planted structure.
    """
    rng = np.random.default_rng(seed)
    seen = _SeenShingles() if novel is not None else None
    docs: list[list[str]] = []
    for text in real_texts(seed):
        words = text.split()
        start = 0
        while len(docs) < n:
            length = int(rng.integers(min_words, max_words + 1))
            if start + length > len(words):
                break
            window = words[start : start + length]
            start += length
            if seen is not None:
                if seen.seen_fraction(window) > novel:
                    continue
                seen.add(window)
            docs.append(window)
        if len(docs) >= n:
            return docs
    raise RuntimeError(f"planted corpus: only {len(docs)} base documents of real text on this machine")


def edit(words: list[str], rate: float, vocab: list[str], rng: np.random.Generator) -> list[str]:
    """Apply word edits at ``rate`` per word, each a substitution, deletion, insertion or swap."""
    out = list(words)
    positions = np.flatnonzero(rng.random(len(out)) < rate)[::-1]  # right to left keeps indices valid
    for pos, op in zip(positions.tolist(), rng.integers(0, 4, len(positions)).tolist(), strict=True):
        if op == 0:
            out[pos] = vocab[rng.integers(len(vocab))]
        elif op == 1 and len(out) > 1:
            del out[pos]
        elif op == 2:
            out.insert(pos, vocab[rng.integers(len(vocab))])
        elif op == 3 and pos + 1 < len(out):
            out[pos], out[pos + 1] = out[pos + 1], out[pos]
    return out


def build_planted_corpus(
    n_docs: int,
    seed: int = 0,
    dup_fraction: float = 0.5,
    max_rate: float = 0.12,
    min_words: int = 50,
    max_words: int = 300,
    novel: float | None = 0.5,
) -> PlantedCorpus:
    """A shuffled corpus of ``n_docs`` documents, ``dup_fraction`` of them planted variants.

    Args:
        n_docs: Documents in all.
        seed: Seeds text order, windows, edits and output order.
        dup_fraction: Share of documents that are variants.
        max_rate: Largest per-word edit rate; 5% of variants are exact copies (rate 0).
        min_words: Shortest base document.
        max_words: Longest base document.
        novel: Largest share of a base document's shingles that earlier ones may hold; None keeps
            the sources' own repeated boilerplate (see :func:`base_documents`).
    """
    rng = np.random.default_rng(seed)
    n_var = int(n_docs * dup_fraction)
    n_base = n_docs - n_var
    docs = base_documents(n_base, seed, min_words, max_words, novel)
    vocab = sorted({w for d in docs[: min(n_base, 2000)] for w in d})
    parent = np.full(n_docs, -1, np.int64)
    family = np.arange(n_docs)
    rate = np.zeros(n_docs)
    for k in range(n_base, n_docs):
        # 30% of variants derive from an earlier variant, so clusters contain chains.
        p = int(rng.integers(n_base, k)) if k > n_base and rng.random() < 0.3 else int(rng.integers(n_base))
        r = 0.0 if rng.random() < 0.05 else float(rng.uniform(0, max_rate))
        docs.append(edit(docs[p], r, vocab, rng))
        parent[k], family[k], rate[k] = p, family[p], r
    order = rng.permutation(n_docs)
    position = np.empty(n_docs, np.int64)
    position[order] = np.arange(n_docs)
    return PlantedCorpus(
        ids=[f"doc-{i:07d}" for i in range(n_docs)],
        texts=[" ".join(docs[i]) for i in order],
        parent=np.where(parent[order] >= 0, position[np.maximum(parent[order], 0)], -1),
        family=position[family[order]],
        rate=rate[order],
    )
