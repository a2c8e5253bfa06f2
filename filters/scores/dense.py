"""Key-term recall and token savings of a dense rewrite (the rule that keeps real gains: filters/rules/dense.py).

A dense rewrite is worth keeping when it says the same in fewer tokens of the *target*
tokenizer. "The same" is approximated by the source's key terms (rule in :func:`key_terms`),
which the rewrite must carry; "fewer tokens" is counted with the target tokenizer on both texts.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

import numpy as np

from filters.tokenizers import load_target_tokenizer
from generators.text import STOPWORDS

VERSION = "dense_v1"
WORD = re.compile(r"\w+")
TOKEN = re.compile(r"\d+(?:[.,]\d+)*%?|[A-Za-z][A-Za-z0-9_'\-]*[A-Za-z0-9]|[A-Za-z]")


def stem(word: str) -> str:
    """A crude suffix stripper so that "functions" matches "function" and "called" matches "call"."""
    w = word.lower().removesuffix("'s")
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            return w[: len(w) - len(suffix)] + repl
    return w


def _candidates(text: str) -> list[str]:
    """Numbers, capitalised words (names, acronyms) and content words of 4+ letters, in text order."""
    out = []
    for tok in TOKEN.findall(text):
        if tok[0].isdigit():
            out.append(tok)
        elif tok.lower() not in STOPWORDS and (len(tok) >= 4 or any(c.isupper() for c in tok)):
            out.append(stem(tok))
    return out


def key_terms(text: str, k: int = 10) -> list[str]:
    """The source's ``k`` key terms: candidates ranked by frequency, ties by first occurrence.

    Candidates are numbers (kept verbatim), words containing a capital letter (names, acronyms)
    and other words of at least 4 letters that are not stop words; words are compared by a crude
    stem (lower case, plural / -ed / -ing stripped).
    """
    found = _candidates(text)
    first = {}
    for i, term in enumerate(found):
        first.setdefault(term, i)
    counts = Counter(found)
    return sorted(counts, key=lambda t: (-counts[t], first[t]))[:k]


def copied_frac(source: str, rewrite: str, n: int = 8) -> float:
    """Share of the rewrite's words inside word ``n``-grams that also occur in the source (case-folded).

    Near 1 for a verbatim copy or a truncated prefix of the source: shorter and full of the source's
    terms, yet no rewrite.
    """
    src, out = WORD.findall(source.lower()), WORD.findall(rewrite.lower())
    if len(out) < n:
        return 0.0
    grams = {tuple(src[i : i + n]) for i in range(len(src) - n + 1)}
    covered = np.zeros(len(out), dtype=bool)
    for i in range(len(out) - n + 1):
        if tuple(out[i : i + n]) in grams:
            covered[i : i + n] = True
    return float(covered.mean())


def key_term_recall(terms: list[str], rewrite: str) -> tuple[float, list[str]]:
    """Share of ``terms`` present in ``rewrite`` (same stem or number), and the missing ones."""
    if not terms:
        return float("nan"), []
    present = set(_candidates(rewrite))
    missing = [t for t in terms if t not in present]
    return 1.0 - len(missing) / len(terms), missing


class DenseScores:
    """Scorer stage: adds ``source_tokens``, ``tokens_saved``, ``key_term_recall`` and ``missing_key_terms``.

    ``tokens_saved`` is ``source_tokens`` minus the rewrite's tokens, both counted with the target
    tokenizer (no special tokens); ``key_term_recall`` follows :func:`key_terms`.

    Args:
        tokenizer: Target tokenizer spec (see :mod:`filters.tokenizers`).
        top_k: Key terms taken from each source.
        text_column: Column holding the rewrite.
        source_column: Column holding the source text.
        allow_network: Allow hub look-ups for the tokenizer.
        cache_dir: Cache for tokenizers extracted from GGUF files.
    """

    adds = ("source_tokens", "tokens_saved", "key_term_recall", "missing_key_terms", "copied_frac")
    version = VERSION

    @classmethod
    def columns(
        cls, text_column: str = "text", source_column: str = "source_text", **_
    ) -> tuple[tuple, tuple]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column, source_column), cls.adds

    def __init__(
        self,
        tokenizer: str,
        top_k: int = 10,
        text_column: str = "text",
        source_column: str = "source_text",
        allow_network: bool = False,
        cache_dir: str | None = None,
    ):
        self.tokenizer = _tokenizer(tokenizer, allow_network, cache_dir)
        self.top_k = top_k
        self.text_column = text_column
        self.source_column = source_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column]]
        sources = [str(s) for s in batch[self.source_column]]
        source_tokens = np.array([len(ids) for ids in self.tokenizer.encode(sources)], dtype=np.int64)
        text_tokens = np.array([len(ids) for ids in self.tokenizer.encode(texts)], dtype=np.int64)
        recalls, missing = zip(
            *(key_term_recall(key_terms(s, self.top_k), t) for s, t in zip(sources, texts))
        )
        batch["source_tokens"] = source_tokens
        batch["tokens_saved"] = source_tokens - text_tokens
        batch["key_term_recall"] = np.array(recalls, dtype=np.float64)
        batch["missing_key_terms"] = np.array(["; ".join(m) for m in missing], dtype=object)
        batch["copied_frac"] = np.array([copied_frac(s, t) for s, t in zip(sources, texts)], dtype=np.float64)
        return batch


@functools.lru_cache(maxsize=2)
def _tokenizer(spec: str, allow_network: bool, cache_dir: str | None):
    """One tokenizer per worker process: the stage runs as Ray tasks, built once per batch."""
    return load_target_tokenizer(spec, "filters.tokenizer", allow_network, cache_dir)
