"""The plan as a Ray dataset: blocks of requests computed where they are used, never a list in the driver.

Row ``i`` of a plan is a pure function of the config, the seed and ``i``
(:meth:`generators.prompts.plan.PlannedGenerator.plan_rows`), so the plan is ``ray.data.range`` over
its blocks of :data:`BLOCK_ROWS` rows, each block planned by a task. With best-of-n, plan row ``j`` is
candidate ``j % k`` of request ``j // k``. The driver plans one row, for the columns the stage list is
checked against (pipeline/job.py).

Blocks are also the unit of the checkpoints (:mod:`pipeline.checkpoint`): the teacher writes a row
of block ``b`` under ``block=b/``, so finding what an earlier run already answered is a task per
block that reads that block's checkpoint ids and compares them with the block's plan ids (an
anti-join in which both sides of a block meet in one task), with no scan in the driver.
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from generators.errors import ConfigError
from generators.prompts.plan import request_id
from pipeline.checkpoint import block_ids, id_numbers
from pipeline.stages import INTERNAL_PREFIX

# Plan rows per block. A power of two, so teacher batches of any power-of-two size up to it never span
# two blocks (a batch then equals the one a single list plan gave); fixed, because checkpoints are
# kept per block and a rerun must find them where it looks.
BLOCK_ROWS = 8192
BLOCK = f"{INTERNAL_PREFIX}block"  # internal column: the plan block of a row (never written anywhere)


@dataclass(frozen=True)
class Plan:
    """The requests of one config and seed, by index.

    Args:
        generator: The configured generator (:class:`generators.prompts.plan.PlannedGenerator`).
        n: Planned requests.
        seed: The run's seed.
        n_candidates: Best-of-n candidates per request (1: off).
    """

    generator: object
    n: int
    seed: int
    n_candidates: int = 1

    def __post_init__(self):
        k = self.n_candidates
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"best_of_n.n_candidates={k}: give a positive integer (1 = off)")

    @property
    def rows(self) -> int:
        return self.n * self.n_candidates

    @property
    def blocks(self) -> int:
        return math.ceil(self.rows / BLOCK_ROWS)

    def block_indices(self, block: int) -> np.ndarray:
        return np.arange(block * BLOCK_ROWS, min(self.rows, (block + 1) * BLOCK_ROWS), dtype=np.int64)

    def rows_at(self, indices) -> list[dict]:
        """Plan rows ``indices``, exactly as the list plan (``generator.plan`` then best-of-n expansion)."""
        indices = np.asarray(indices, dtype=np.int64)
        k = self.n_candidates
        if k == 1:
            return self.generator.plan_rows(indices, self.seed)
        bases, where = np.unique(indices // k, return_inverse=True)
        planned = self.generator.plan_rows(bases, self.seed)
        rows = []
        for j, b in zip(indices.tolist(), where.tolist()):
            row, candidate = planned[b], j % k
            rid = request_id({"request_group": row["id"], "candidate": candidate}, self.seed)
            rows.append({**row, "id": rid, "request_group": row["id"], "candidate": candidate})
        return rows

    def columns(self) -> list[str]:
        """The plan's columns, from its first row planned on a copy (the driver keeps no axes)."""
        return list(Plan(copy.copy(self.generator), 1, self.seed, self.n_candidates).rows_at([0])[0])

    def block_table(self, block: int, indices=None) -> pa.Table:
        """Rows of ``block`` (all, or those of ``indices``) as one table with the internal block column."""
        indices = self.block_indices(block) if indices is None else np.asarray(indices, dtype=np.int64)
        rows = self.rows_at(indices)
        table = pa.Table.from_pylist(rows)
        ids = table.column("id").to_numpy(zero_copy_only=False)
        if len(np.unique(ids)) != len(ids):  # ids key checkpoints, dedup and shards
            raise RuntimeError(f"generator {self.generator.name} planned repeated request ids")
        return table.append_column(BLOCK, pa.array(np.full(len(rows), block, np.int64)))


def blocks_dataset(plan: Plan):
    """One row per plan block, ``{block}``, one per Ray block: the input every plan task maps over.

    Made in the driver (``from_items``), not by ``ray.data.range``: a range is a read task asking for a
    whole CPU, and beside the scorer actors of the same pass (1.25 CPUs on a 2-CPU machine) it was never
    scheduled, so the run waited forever."""
    import ray

    return ray.data.from_items([{"block": b} for b in range(plan.blocks)], override_num_blocks=plan.blocks)


_SHARED: dict[str, Plan] = {}


def shared(plan: Plan) -> Plan:
    """This worker process's copy of ``plan``: tasks of one run reuse its loaded axes and permutations
    (a Ray worker runs many tasks; each task gets a fresh unpickled plan without them)."""
    key = xxhash.xxh3_64_hexdigest(pickle.dumps(plan))
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = plan
    return _SHARED[key]


def plan_blocks(batch: dict, plan: Plan) -> pa.Table:
    """Task: rows ``{block}`` (and optionally ``todo``, the plan indices still to generate) to plan rows."""
    plan, todo = shared(plan), batch.get("todo")
    tables = [
        plan.block_table(int(b), None if todo is None else todo[i]) for i, b in enumerate(batch["block"])
    ]
    return pa.concat_tables(tables)


def find_finished(batch: dict, plan: Plan, checkpoint_dir: str) -> pa.Table:
    """Task: per block, what its checkpoints already hold: ``ids`` (the block's plan ids, as uint64 from
    their hex), ``todo`` (plan indices with no checkpointed row) and ``n_todo``."""
    plan = shared(plan)
    blocks, ids, todo = [int(b) for b in batch["block"]], [], []
    for b in blocks:
        indices = plan.block_indices(b)
        planned = id_numbers([r["id"] for r in plan.rows_at(indices)])
        ids.append(planned)
        todo.append(indices[~np.isin(planned, id_numbers(block_ids(checkpoint_dir, b)))])
    return pa.table(
        {
            "block": pa.array(blocks, pa.int64()),
            "ids": pa.array(ids, pa.list_(pa.uint64())),
            "todo": pa.array(todo, pa.list_(pa.int64())),
            "n_todo": pa.array([len(t) for t in todo], pa.int64()),
        }
    )
