"""Tokenization-efficiency scores for a target tokenizer (the student's, not necessarily the teacher's).

A text that a tokenizer encodes in fewer tokens per word and more bytes per token costs the
student less compute per unit of content. All scores come from one batched call of a fast
tokenizer; definitions are in docs/metrics.md.
"""

from __future__ import annotations

import re

import numpy as np

from generators.models import load_tokenizer

WORD = re.compile(r"\S+")
VERSION = "token_metrics_v1"


def count_words(text: str) -> int:
    """Whitespace-separated words: the denominator of fertility (tokens per word)."""
    return len(WORD.findall(text))


class TokenMetrics:
    """Scorer stage: adds ``n_tokens``, ``n_chars``, ``n_bytes``, ``n_words``, ``chars_per_token``,
    ``bytes_per_token`` and ``fertility`` for the target tokenizer.

    Args:
        tokenizer: Model spec of the target tokenizer (see :func:`generators.models.resolve`).
        text_column: Column holding the text.
        allow_network: Allow hub look-ups for the tokenizer.
        cache_dir: Cache for tokenizers extracted from GGUF files.
    """

    adds = ("n_tokens", "n_chars", "n_bytes", "n_words", "chars_per_token", "bytes_per_token", "fertility")

    def __init__(self, tokenizer: str, text_column: str = "text", allow_network: bool = False, cache_dir=None):
        self.tokenizer = load_tokenizer(tokenizer, "filters.tokenizer", allow_network, cache_dir)
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column]]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        n_tokens = np.array([len(ids) for ids in encoded], dtype=np.int64)
        n_chars = np.array([len(t) for t in texts], dtype=np.int64)
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
        n_words = np.array([count_words(t) for t in texts], dtype=np.int64)
        safe_tokens = np.maximum(n_tokens, 1)
        batch.update(
            n_tokens=n_tokens,
            n_chars=n_chars,
            n_bytes=n_bytes,
            n_words=n_words,
            chars_per_token=n_chars / safe_tokens,
            bytes_per_token=n_bytes / safe_tokens,
            fertility=n_tokens / np.maximum(n_words, 1),
        )
        return batch
