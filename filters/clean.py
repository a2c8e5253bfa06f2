"""Light clean-up of teacher output before scoring: strip, and trim texts cut by the token limit."""

from __future__ import annotations

import re

import numpy as np

# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before whitespace.
SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cut ``text`` after its last complete sentence (empty if it has none)."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else ""


class Cleaner:
    """Stage: strips texts and handles rows that hit ``max_new_tokens`` (``finish_reason == "length"``).

    Args:
        truncated: ``trim`` cuts such texts after their last full sentence, ``keep`` leaves them,
            ``drop`` leaves them for the filter (see :class:`filters.rules.SanityFilter`).
        text_column: Column holding the text.

    Adds ``trimmed`` (bool): whether the text was shortened.
    """

    def __init__(self, truncated: str = "trim", text_column: str = "text"):
        if truncated not in ("trim", "keep", "drop"):
            raise ValueError(f"filters.truncated={truncated}: use trim, keep or drop")
        self.truncated = truncated
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        texts = [str(t).strip() for t in batch[self.text_column]]
        trimmed = np.zeros(len(texts), dtype=bool)
        if self.truncated == "trim" and "finish_reason" in batch:
            for i, reason in enumerate(batch["finish_reason"]):
                if reason == "length":
                    texts[i] = trim_to_sentence(texts[i])
                    trimmed[i] = True
        batch[self.text_column] = np.array(texts, dtype=object)
        batch["trimmed"] = trimmed
        return batch
