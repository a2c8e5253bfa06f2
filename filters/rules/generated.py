"""Structure checks of generated rows: complete conversations, parsed annotation layers, answers
that match the configured JSON schema or regex.

These rules read columns the generators write (``n_turns``, ``layers_missing``, ``structure_error``);
a generator's ``conf/generator/*.yaml`` names them under ``filters:`` (the structure rule is added
when ``generator.structure`` is set), so they run only for its own rows.
"""

from __future__ import annotations

import numpy as np

from filters.rules.base import Filter


class ConversationFilter(Filter):
    """Drops conversations with fewer assistant turns than asked as ``incomplete_conversation``.

    A conversation stops early when a turn came back empty (or empty after trimming a cut-off
    turn to its last full sentence).

    Args:
        turns: User/assistant exchanges each conversation must have.
    """

    name = "conversation"

    def __init__(self, turns: int = 1):
        self.turns = turns

    def needs(self) -> tuple[str, ...]:
        return ("n_turns",)

    def reasons(self) -> tuple[str, ...]:
        return ("incomplete_conversation",)

    def checks(self, batch: dict):
        yield np.asarray(batch["n_turns"]) < self.turns, "incomplete_conversation"


class LayerFilter(Filter):
    """Drops rows whose required annotation layers did not parse as ``layers_unparsed``.

    Args:
        required: Layer names that must have at least one parsed item (see generators/prompts/layered.py).
    """

    name = "layers"

    def __init__(self, required: list[str] | None = None):
        self.required = set(required or [])

    def needs(self) -> tuple[str, ...]:
        return ("layers_missing",)

    def reasons(self) -> tuple[str, ...]:
        return ("layers_unparsed",)

    def checks(self, batch: dict):
        missing = [set(filter(None, str(m).split(","))) for m in batch["layers_missing"]]
        yield np.array([bool(m & self.required) for m in missing], dtype=bool), "layers_unparsed"


class StructureFilter(Filter):
    """Drops rows whose text does not match ``generator.structure`` as ``structure_invalid``.

    The teacher enforces the structure while decoding (hf, fast) or asks the server for it (openai);
    what still fails (a JSON answer cut by ``max_new_tokens``, a server that ignored the schema after
    its retries) carries the reason in ``structure_error``.
    """

    name = "structure"

    def needs(self) -> tuple[str, ...]:
        return ("structure_error",)

    def reasons(self) -> tuple[str, ...]:
        return ("structure_invalid",)

    def checks(self, batch: dict):
        yield np.array([bool(e) for e in batch["structure_error"]], dtype=bool), "structure_invalid"
