"""What the pipeline expects of a generator, and of one that needs several teacher calls per row.

Every generator plans rows (``plan(n, seed)``) whose ``prompt`` column holds the first chat
request. A *multi-step* generator also answers two questions, both pure functions of the row and
the completions so far, so the teacher stage can run every step of a batch of rows without
knowing what the steps mean:

* ``followup(row, completions)`` — the chat messages of the next teacher call, or ``None`` when
  the row is complete (at most ``max_steps`` calls in all);
* ``finish(row, completions)`` — the columns the finished row gets (at least ``text``).

A generator's own scorers and rules (e.g. the dense generator's key-term check) are not named
here: its ``conf/generator/*.yaml`` lists them under ``filters:``, and the pipeline runs them after
the default ones. Generators never import ``filters``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from generators.teachers.contract import FINISH_LENGTH, Completion
from generators.text import trim_to_sentence


@runtime_checkable
class Generator(Protocol):
    name: str
    columns: tuple[str, ...]

    def plan(self, n: int, seed: int) -> list[dict]:
        """Rows with at least ``id``, ``generator`` and ``prompt`` (JSON chat messages)."""
        ...

    def plan_rows(self, indices, seed: int) -> list[dict]:
        """Rows ``indices`` of ``plan(n, seed)`` for any ``n`` above them: the pipeline plans in blocks."""
        ...


@runtime_checkable
class MultiStep(Protocol):
    max_steps: int

    def followup(self, row: dict, completions: list[Completion]) -> list[dict] | None:
        """Messages of the next teacher call for ``row``, or ``None`` when it is complete."""
        ...

    def finish(self, row: dict, completions: list[Completion]) -> dict:
        """Output columns of a complete (or failed) row; the same keys for every row."""
        ...


def step_text(completion: Completion) -> str:
    """A step's text, cut after its last full sentence or line when the token limit cut it."""
    text = completion.text.strip()
    if completion.finish_reason != FINISH_LENGTH:
        return text
    if "\n" in text:  # a list: drop the last, unfinished line
        return text.rsplit("\n", 1)[0].strip()
    return trim_to_sentence(text)
