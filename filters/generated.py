"""Structure checks of generated rows: complete conversations, parsed annotation layers.

These filters read columns the generators write (``n_turns``, ``layers_missing``); generators
name them in ``extra_filters`` so the graph runs them only for their own rows.
"""

from __future__ import annotations

import numpy as np

from filters.rules import _reasons, mark


class ConversationFilter:
    """Drops conversations with fewer assistant turns than asked as ``incomplete_conversation``.

    A conversation stops early when a turn came back empty (or empty after trimming a cut-off
    turn to its last full sentence).

    Args:
        turns: User/assistant exchanges each conversation must have.
    """

    def __init__(self, turns: int = 1):
        self.turns = turns

    def __call__(self, batch: dict) -> dict:
        reasons = _reasons(batch)
        mark(reasons, np.asarray(batch["n_turns"]) < self.turns, "incomplete_conversation")
        batch["drop_reason"] = reasons
        return batch


class LayerFilter:
    """Drops rows whose required annotation layers did not parse as ``layers_unparsed``.

    Args:
        required: Layer names that must have at least one parsed item (see generators/layered.py).
    """

    def __init__(self, required: list[str] | None = None):
        self.required = set(required or [])

    def __call__(self, batch: dict) -> dict:
        reasons = _reasons(batch)
        missing = [set(filter(None, str(m).split(","))) for m in batch["layers_missing"]]
        mark(reasons, np.array([bool(m & self.required) for m in missing], dtype=bool), "layers_unparsed")
        batch["drop_reason"] = reasons
        return batch
