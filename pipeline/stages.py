"""The teacher stage: one teacher per Ray actor, answering batches of plan rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from generators.teacher import Request
from pipeline.checkpoint import write_batch

log = logging.getLogger(__name__)



class GenerateStage:
    """Turns plan rows into generated rows and checkpoints every finished batch.

    The teacher (model load included) is built once, in ``__init__``, inside the actor.

    Args:
        teacher: Teacher config with ``_target_`` (see conf/teacher/).
        checkpoint_dir: Where finished batches are written (see :mod:`pipeline.checkpoint`).
    """

    def __init__(self, teacher: dict, checkpoint_dir: str | None = None):
        from hydra.utils import instantiate

        self.teacher = instantiate(teacher, _convert_="all")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch["id"]]
        if not ids:
            return batch
        requests = [Request(i, tuple(json.loads(p))) for i, p in zip(ids, batch["prompt"])]
        completions = self.teacher.generate(requests)
        if [c.id for c in completions] != ids:
            raise RuntimeError(f"teacher {self.teacher.name} returned completions out of order")
        out = {k: list(v) for k, v in batch.items()}
        out.update(
            text=[c.text for c in completions],
            finish_reason=[c.finish_reason for c in completions],
            error=[c.error or "" for c in completions],
            prompt_tokens=[c.prompt_tokens for c in completions],
            completion_tokens=[c.completion_tokens for c in completions],
            teacher=[self.teacher.name] * len(ids),
            sampling=[self.teacher.sampling.to_json()] * len(ids),
        )
        if self.checkpoint_dir is not None:
            ok = [i for i, c in enumerate(completions) if c.finish_reason != "error"]
            table = pa.table({k: [v[i] for i in ok] for k, v in out.items()})
            write_batch(self.checkpoint_dir, table)
        errors = sum(c.finish_reason == "error" for c in completions)
        if errors:
            log.warning("%d of %d requests failed in this batch", errors, len(ids))
        return {k: np.asarray(v, dtype=object if isinstance(v[0], str) else None) for k, v in out.items()}
