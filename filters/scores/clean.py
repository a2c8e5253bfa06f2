"""Light clean-up of teacher output before scoring: strip, and trim texts cut by the token limit.

A preparing stage: it edits the text and adds ``trimmed``, and never drops a row.
"""

from __future__ import annotations

import numpy as np

from generators.errors import ConfigError
from generators.text import trim_to_sentence


class Cleaner:
    """Stage: strips texts and handles rows that hit ``max_new_tokens`` (``finish_reason == "length"``).

    Args:
        truncated: ``trim`` cuts such texts after their last full sentence, ``keep`` leaves them,
            ``drop`` leaves them for the filter (see :class:`filters.rules.SanityFilter`).
        text_column: Column holding the text.

    Adds ``trimmed`` (bool): whether the text was shortened.
    """

    @classmethod
    def columns(cls, truncated: str = "trim", text_column: str = "text") -> tuple[tuple, tuple]:
        """``(needs, adds)``; checks ``truncated`` (cheap: the driver calls it before the run)."""
        if truncated not in ("trim", "keep", "drop"):
            raise ConfigError(f"filters.truncated={truncated}: use trim, keep or drop")
        return (text_column,), (text_column, "trimmed")

    def __init__(self, truncated: str = "trim", text_column: str = "text"):
        self.columns(truncated, text_column)
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
