"""Tokenization-efficiency scores for a target tokenizer (the student's, not necessarily the teacher's).

A text that a tokenizer encodes in fewer tokens per word and more bytes per token costs the
student less compute per unit of content. All scores come from one batched call of the target
tokenizer (fast HF tokenizer or SentencePiece); definitions are in docs/metrics.md.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from filters.rules.base import texts_to_score
from filters.tokenizers import load_target_tokenizer

WORD = re.compile(r"\S+")
TOKEN_IDS = "_litho_token_ids"  # internal column: the ids as int32 bytes, kept for packing (never in a shard)
VERSION = "token_metrics_v2"  # v2 adds pcw, byte_fallback_rate, unk_rate, gzip_ratio; v1 columns unchanged


def count_words(text: str) -> int:
    """Whitespace-separated words: the denominator of fertility (tokens per word)."""
    return len(WORD.findall(text))


def deflate_ratio(data: bytes) -> float:
    """Raw DEFLATE (gzip's algorithm, level 9, no container header) size over input size."""
    if not data:
        return float("nan")
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return len(packer.compress(data) + packer.flush()) / len(data)


def split_words(text: str, spans: np.ndarray) -> tuple[int, int]:
    """Count words and the words that overlap two or more tokens.

    Args:
        text: The text.
        spans: ``(n_tokens, 2)`` character spans ``[start, end)`` of its tokens.

    Returns:
        ``(n_words, n_split_words)``; a word is a maximal run of non-whitespace characters.
    """
    bounds = np.array([m.span() for m in WORD.finditer(text)], dtype=np.int64).reshape(-1, 2)
    n_words = len(bounds)
    if n_words == 0 or len(spans) == 0:
        return n_words, 0
    # Token [s, e) overlaps words lo..hi: the first word ending after s, the last starting before e.
    lo = np.searchsorted(bounds[:, 1], spans[:, 0], side="right")
    hi = np.searchsorted(bounds[:, 0], spans[:, 1], side="left") - 1
    hit = lo <= hi
    cover = np.zeros(n_words + 1, dtype=np.int64)
    np.add.at(cover, lo[hit], 1)
    np.add.at(cover, hi[hit] + 1, -1)
    return n_words, int((np.cumsum(cover[:-1]) >= 2).sum())


class TokenMetrics:
    """Scorer stage: adds ``n_tokens``, ``n_chars``, ``n_bytes``, ``n_words``, ``chars_per_token``,
    ``bytes_per_token``, ``fertility``, ``pcw``, ``byte_fallback_rate``, ``unk_rate`` and
    ``gzip_ratio`` for the target tokenizer.

    Fertility and PCW (proportion of continued words) follow Rust et al. 2021, "How Good is Your
    Tokenizer?"; gzip_ratio is a compressibility (information-density) proxy. See docs/metrics.md.

    Args:
        tokenizer: Target tokenizer spec: a model spec (:func:`generators.teachers.models.resolve`), a
            ``.gguf`` file, a HF tokenizer directory or ``tokenizer.json``, or a SentencePiece
            ``.model`` file (see :mod:`filters.tokenizers`).
        text_column: Column holding the text.
        allow_network: Allow hub look-ups for the tokenizer.
        cache_dir: Cache for tokenizers extracted from GGUF files.
        keep_ids: Also keep each text's token ids (:data:`TOKEN_IDS`), so packing does not tokenize again.
    """

    # Holds nothing a run changes: a small run keeps one per worker process (pipeline/stages.py).
    shareable = True

    adds = (
        "n_tokens",
        "n_chars",
        "n_bytes",
        "n_words",
        "chars_per_token",
        "bytes_per_token",
        "fertility",
        "pcw",
        "byte_fallback_rate",
        "unk_rate",
        "gzip_ratio",
    )

    version = VERSION

    @classmethod
    def columns(cls, text_column: str = "text", **_) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column,), cls.adds

    def __init__(
        self,
        tokenizer: str,
        text_column: str = "text",
        allow_network: bool = False,
        cache_dir=None,
        keep_ids: bool = False,
    ):
        self.tokenizer = load_target_tokenizer(tokenizer, "filters.tokenizer", allow_network, cache_dir)
        self.text_column = text_column
        self.keep_ids = keep_ids

    def __call__(self, batch: dict) -> dict:
        texts = texts_to_score(batch, self.text_column)
        ids, spans = self.tokenizer.encode_offsets(texts)
        n_tokens = np.array([len(x) for x in ids], dtype=np.int64)
        n_chars = np.array([len(t) for t in texts], dtype=np.int64)
        utf8 = [t.encode("utf-8") for t in texts]
        n_bytes = np.array([len(b) for b in utf8], dtype=np.int64)
        words = np.array([split_words(t, s) for t, s in zip(texts, spans, strict=True)], dtype=np.int64)
        n_words, n_split = words.reshape(-1, 2).T

        flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(n_tokens.sum()))
        row = np.repeat(np.arange(len(texts)), n_tokens)
        fallback = np.bincount(row, weights=self.tokenizer.is_byte_fallback[flat], minlength=len(texts))
        unknown = np.zeros(len(texts))
        if self.tokenizer.unk_id is not None:
            unknown = np.bincount(row, weights=flat == self.tokenizer.unk_id, minlength=len(texts))

        safe_tokens = np.maximum(n_tokens, 1)
        safe_words = np.maximum(n_words, 1)
        batch.update(
            n_tokens=n_tokens,
            n_chars=n_chars,
            n_bytes=n_bytes,
            n_words=n_words,
            chars_per_token=n_chars / safe_tokens,
            bytes_per_token=n_bytes / safe_tokens,
            fertility=n_tokens / safe_words,
            pcw=n_split / safe_words,
            byte_fallback_rate=fallback / safe_tokens,
            unk_rate=unknown / safe_tokens,
            gzip_ratio=np.array([deflate_ratio(b) for b in utf8], dtype=np.float64),
        )
        if self.keep_ids:
            batch[TOKEN_IDS] = np.array(
                [np.asarray(x, np.int32).tobytes() for x in ids] + [None], dtype=object
            )[:-1]
        return batch
