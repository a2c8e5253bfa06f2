"""The teacher stage: one teacher per Ray actor, rows answered as they finish, checkpointed in small groups.

``GenerateStage.__call__`` is a coroutine, so Ray Data runs several of an actor's batches at once (an
async UDF, as Ray Data LLM's vLLM stage is; ``cluster.teacher_batches_in_flight``): every row of
every batch in flight goes to the teacher as soon as its batch arrives
(:class:`generators.teachers.stream.Streamer`), and the engine is never left idle at a batch's tail
or while a checkpoint is written. A row runs all its teacher calls (a multi-step generator's
follow-ups are sent as soon as the row's previous answer is in) and is checkpointed once complete
(:class:`pipeline.checkpoint_stream.RowGroups`); a batch returns its failed rows once its complete
rows are on disk. A text depends only on its request (every backend seeds each request by its id),
so neither batching nor timing changes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np

from generators.prompts.protocol import MultiStep
from generators.teachers.contract import FINISH_ERROR, Completion, Request
from generators.teachers.structure import Structure
from pipeline.checkpoint import block_ids
from pipeline.checkpoint_stream import ProgressRecord, RowGroups
from pipeline.plan import BLOCK

# What the teacher stage adds to a plan row.
TEACHER_COLUMNS = (
    "text",
    "finish_reason",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "teacher",
    "sampling",
)

log = logging.getLogger(__name__)


class GenerateStage:
    """Turns plan rows into generated rows and checkpoints them in groups as they finish.

    The teacher (model load included) is built once, in ``__init__``, inside the actor. With a
    ``checkpoint_dir``, complete rows go to the checkpoints and only the failed rows are returned;
    without one, every row is returned.

    Args:
        teacher: Teacher config with ``_target_`` (see conf/teacher/), plus ``checkpoint_rows`` (rows per
            checkpoint group) and ``checkpoint_s`` (longest a finished row waits for its group).
        checkpoint_dir: Where finished rows are written (see :mod:`pipeline.checkpoint`).
        generator: The plan's generator; when it is multi-step (:mod:`generators.prompts.protocol`) every
            row runs all its teacher calls here and is checkpointed only once complete.
        structure: ``generator.structure``: the JSON schema or regex every answer must match.
        run: The run's id: the actor's progress record (pipeline/progress.py) names it.
    """

    def __init__(self, teacher: dict, checkpoint_dir: str | None = None, generator=None, structure=None,
                 run: str = ""):  # fmt: skip
        from hydra.utils import instantiate

        from generators.teachers.stream import Streamer, split_config

        settings, stage = split_config(teacher)
        self.teacher = instantiate(settings, _convert_="all")
        self.stream = Streamer(self.teacher)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.generator = generator
        self.structure = Structure.from_config(structure)
        self.groups = self.record = None
        self._known: dict[int, set[str]] = {}  # per plan block: ids already checkpointed
        if self.checkpoint_dir is not None:
            self.groups = RowGroups(self.checkpoint_dir, stage["checkpoint_rows"], stage["checkpoint_s"])
            if run:
                cap = self.teacher.sampling.max_new_tokens
                self.record = ProgressRecord(self.checkpoint_dir, run, self.groups, self.stream.meter, cap)
        self._in_flight = 0
        self._keys: list[str] = []

    async def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch["id"]]
        if not ids:
            return batch
        blocks = np.asarray(batch.get(BLOCK, np.zeros(len(ids), np.int64)))
        rows = [{k: v[i] for k, v in batch.items() if k != BLOCK} for i in range(len(ids))]
        # An actor Ray restarted gets its batches again: what it checkpointed before is not asked again.
        todo = [i for i in range(len(ids)) if ids[i] not in self._done(int(blocks[i]))]
        if self.groups is not None:
            self.groups.start()
        self._in_flight += 1
        try:
            out = await asyncio.gather(*(self._row(rows[i], int(blocks[i])) for i in todo))
            if self.groups is not None:  # this batch's rows are on disk before Ray Data hears it is done
                await asyncio.to_thread(self.groups.flush, self._in_flight == 1)
            if self.record is not None:  # and counted: the driver's usage totals read the records
                await asyncio.to_thread(self.record.write)
        finally:
            self._in_flight -= 1
        failed = [r for r in out if r["finish_reason"] == FINISH_ERROR]
        if failed:
            log.warning("%d of %d requests failed in this batch", len(failed), len(ids))
        keep = out if self.checkpoint_dir is None else failed
        if out:
            self._keys = list(out[0])
        if not keep:  # the columns of a row, none of its rows
            columns = self._keys or [k for k in batch if k != BLOCK] + list(TEACHER_COLUMNS)
            return {k: np.asarray([], dtype=object) for k in columns}
        return {
            k: np.asarray(v, dtype=object if isinstance(v[0], str) else None)
            for k, v in ((k, [r[k] for r in keep]) for k in keep[0])
        }

    def _done(self, block: int) -> set[str]:
        if block not in self._known:
            found = block_ids(self.checkpoint_dir, block) if self.checkpoint_dir is not None else []
            self._known[block] = set(found)
        return self._known[block]

    async def _row(self, row: dict, block: int) -> dict:
        """Every teacher call of one row (one for plain generators, up to ``max_steps`` for multi-step
        ones; later steps get their own request ids, so backends seed them differently)."""
        multi = isinstance(self.generator, MultiStep)
        structure_of = getattr(self.generator, "step_structure", None)
        rid, messages, steps = str(row["id"]), json.loads(row["prompt"]), []
        for step in range(self.generator.max_steps if multi else 1):
            request = Request(
                rid if step == 0 else f"{rid}/{step}",
                tuple(messages),
                structure_of(row, step) if structure_of else self.structure,
            )
            completion = await self.stream.answer(request)
            if completion.id != request.id:
                raise RuntimeError(f"teacher {self.teacher.name} answered {completion.id} for {request.id}")
            steps.append(completion)
            if not multi or completion.finish_reason == FINISH_ERROR:
                break
            messages = self.generator.followup(row, steps)
            if not messages:
                break
        out = self._columns(row, steps)
        if self.groups is not None and out["finish_reason"] != FINISH_ERROR:
            self.groups.add(block, out)
            self._known.setdefault(block, set()).add(rid)
        return out

    def _columns(self, row: dict, steps: list[Completion]) -> dict:
        """The plan row with the teacher's columns (and a multi-step generator's own)."""
        out = dict(row)
        out.update(
            text=steps[-1].text,
            finish_reason=_finish_reason(steps),
            error=next((c.error for c in steps if c.error), ""),
            prompt_tokens=sum(c.prompt_tokens for c in steps),
            completion_tokens=sum(c.completion_tokens for c in steps),
            teacher=self.teacher.name,
            sampling=sampling_record(self.teacher),
        )
        if self.structure is not None:  # generator.structure: the filter drops what does not match
            out["structure_error"] = steps[-1].invalid or ""
        if isinstance(self.generator, MultiStep):
            out.update(self.generator.finish(out, steps))
            out["steps"] = json.dumps([c.text for c in steps], ensure_ascii=False)
        return out

    def __del__(self):
        if getattr(self, "record", None) is not None:
            self.record.close()
        if getattr(self, "stream", None) is not None:
            self.stream.close()


def sampling_record(teacher) -> str:
    """The row's ``sampling`` column: the teacher's :class:`SamplingParams` plus what else changes its texts
    (``sampling_extra``, e.g. the token-aware settings), as sorted JSON."""
    record = json.loads(teacher.sampling.to_json())
    record.update(getattr(teacher, "sampling_extra", None) or {})
    return json.dumps(record, sort_keys=True)


def _finish_reason(steps: list[Completion]) -> str:
    """A row failed if any step failed; otherwise it ended as its last step did."""
    return FINISH_ERROR if any(c.finish_reason == FINISH_ERROR for c in steps) else steps[-1].finish_reason
