"""Deterministic request plans: which prompts to send, each with a stable id.

A plan is a list of plain dict rows (one per request) with at least ``id``, ``generator`` and
``prompt`` (the chat messages as JSON). Generators add the columns that describe what was asked
(topic, format, audience, source ids...), which travel with the row into the output shards.
The same config and seed always give the same rows in the same order with the same ids.

Row ``i`` of a plan is computable on its own (:meth:`PlannedGenerator.plan_rows`): pass
``i // grid`` of the walk is the ``(i // grid + 1)``-th seeded permutation of the grid, so a
block of a distributed plan (pipeline/generate.py) needs only the permutations of its passes, and
``plan(n)`` is always a prefix of ``plan(m)`` for ``m > n``.

Every generator plans the same way (:class:`PlannedGenerator`): a seeded walk over the grid of its
axes (subjects × formats × audiences, seeds × styles, ...), one row per pick, its messages built by
a pure function of the row and its id hashed from what is asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import xxhash


def request_id(content: dict, seed: int) -> str:
    """Stable 16-hex-digit id: xxh3-64 of the canonical JSON of what is asked, keyed by the seed."""
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return xxhash.xxh3_64_hexdigest(canonical.encode(), seed=seed)


def messages_json(messages: list[dict]) -> str:
    return json.dumps(messages, ensure_ascii=False)


def sample_combinations(sizes: tuple[int, ...], n: int, seed: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """Yield ``n`` (variant, index tuple) picks over the grid ``sizes`` without repeats per variant.

    Each pass over the grid is a fresh seeded permutation, so every combination is used once
    before any is used twice; ``variant`` counts the passes and makes repeated prompts distinct.
    """
    total = int(np.prod(sizes))
    rng = np.random.default_rng(seed)
    produced = 0
    variant = 0
    while produced < n:
        for flat in rng.permutation(total)[: n - produced]:
            yield variant, tuple(int(i) for i in np.unravel_index(int(flat), sizes))
            produced += 1
        variant += 1


class PermutationWalk:
    """The walk of :func:`sample_combinations` by index: pass ``v`` is the ``(v+1)``-th
    ``rng.permutation(grid)`` of ``default_rng(seed)``, drawn once and kept.

    Args:
        sizes: Lengths of the axes.
        seed: The plan's seed.
    """

    def __init__(self, sizes: tuple[int, ...], seed: int):
        self.sizes = sizes
        self.total = int(np.prod(sizes))
        self.rng = np.random.default_rng(seed)
        self.passes: list[np.ndarray] = []

    def permutation(self, variant: int) -> np.ndarray:
        while len(self.passes) <= variant:
            self.passes.append(self.rng.permutation(self.total))
        return self.passes[variant]

    def picks(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(variants, index tuples)`` of plan rows ``indices``: the same picks, in the same order, as
        ``list(sample_combinations(sizes, n, seed))[i]`` for each ``i``."""
        variants = indices // self.total
        flat = np.empty(len(indices), dtype=np.int64)
        for v in np.unique(variants).tolist():
            mine = variants == v
            flat[mine] = self.permutation(v)[indices[mine] % self.total]
        return variants, np.stack(np.unravel_index(flat, self.sizes), axis=1).reshape(len(indices), -1)


class PlannedGenerator:
    """The plan loop shared by every generator; subclasses say what the axes and the rows are.

    Subclasses set ``name`` and implement :meth:`axes`, :meth:`make_row` and ``build_messages(row)``;
    they override :meth:`id_content` when more than the messages and the variant make a request
    distinct (e.g. prompts of later steps).
    """

    name = "generator"

    def axes(self) -> tuple[Sequence, ...]:
        """The lists whose combinations are planned, e.g. ``(topics, formats, audiences)``."""
        raise NotImplementedError

    def make_row(self, variant: int, picks: tuple) -> dict:
        """The columns of one request (``generator``, ``variant`` and what was asked), in column order."""
        raise NotImplementedError

    def build_messages(self, row: dict) -> list[dict]:
        raise NotImplementedError

    def id_content(self, row: dict, messages: list[dict]) -> dict:
        """What the request id hashes: everything that changes the text the teacher is asked for."""
        return {"generator": self.name, "messages": messages, "variant": row["variant"]}

    def plan(self, n: int, seed: int) -> list[dict]:
        """``n`` rows; every combination of the axes once before any is used twice."""
        return self.plan_rows(np.arange(n), seed)

    def plan_rows(self, indices, seed: int) -> list[dict]:
        """Rows ``indices`` (any order) of the plan of ``seed``, each exactly as :meth:`plan` makes it.

        The axes load once per generator object and the pass permutations are cached on it, so the
        blocks of a distributed plan that one worker handles cost one walk over their passes.
        """
        axes = self._cached_axes()
        walk = self._walk(seed, tuple(len(a) for a in axes))
        indices = np.asarray(indices, dtype=np.int64)
        variants, picks = walk.picks(indices)
        rows = []
        for variant, index in zip(variants.tolist(), picks.tolist()):
            row = self.make_row(variant, tuple(axis[i] for axis, i in zip(axes, index)))
            messages = self.build_messages(row)
            row["prompt"] = messages_json(messages)
            row["id"] = request_id(self.id_content(row, messages), seed)
            rows.append(row)
        return rows

    def _cached_axes(self) -> tuple:
        # Not pickled with the generator (see __getstate__): a Ray worker loads its own copy once.
        if getattr(self, "_axes", None) is None:
            self._axes = self.axes()
        return self._axes

    def _walk(self, seed: int, sizes: tuple[int, ...]) -> PermutationWalk:
        walks = self.__dict__.setdefault("_walks", {})
        if (seed, sizes) not in walks:
            walks[(seed, sizes)] = PermutationWalk(sizes, seed)
        return walks[(seed, sizes)]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_axes", "_walks")}
