"""Selection after processing: best-of-n among candidates, and the SFT format's column names.

Best-of-n asks for several candidates per request and keeps the best by a score expression
(:mod:`pipeline.expression`). Candidates are separate plan rows sharing a ``request_group`` (the id
the request would have had alone); the candidate index is part of each candidate's id content.
After scoring, filters and dedup, rows are hash-partitioned by ``request_group``
(:mod:`pipeline.partition`), and each partition's task picks the best kept candidate of its groups
(ties: smallest id) and marks the others ``not_best_of_n``; nothing per row reaches the driver.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from filters.rules.base import current_reasons, record_drops
from generators.errors import ConfigError
from generators.prompts.plan import request_id
from pipeline import expression
from pipeline.stages import StageSpec

log = logging.getLogger(__name__)
KEY = "best_of_n.score"


def expand(plan: list[dict], n_candidates: int, seed: int) -> list[dict]:
    """``n_candidates`` rows per planned request (the plan itself when it is 1)."""
    if not isinstance(n_candidates, int) or n_candidates < 1:
        raise ConfigError(f"best_of_n.n_candidates={n_candidates}: give a positive integer (1 = off)")
    if n_candidates == 1:
        return plan
    rows = []
    for row in plan:
        for k in range(n_candidates):
            rid = request_id({"request_group": row["id"], "candidate": k}, seed)
            rows.append({**row, "id": rid, "request_group": row["id"], "candidate": k})
    return rows


def losers(ids: list[str], groups: list[str], reasons: list[str], scores: np.ndarray) -> dict[str, float]:
    """Ids of kept candidates that are not their group's best; NaN scores lose, ties go to the smallest id."""
    best: dict[str, tuple[float, str]] = {}
    for rid, group, reason, score in zip(ids, groups, reasons, scores):
        if reason:
            continue
        key = (-np.inf if np.isnan(score) else float(score), rid)
        current = best.get(group)
        if current is None or key[0] > current[0] or (key[0] == current[0] and rid < current[1]):
            best[group] = key
    return {rid: best[g][1] for rid, g, r in zip(ids, groups, reasons) if not r and best[g][1] != rid}


def best_of_n(ds, score: str):
    """Dataset stage: mark all but the best kept candidate of each ``request_group`` as ``not_best_of_n``
    and add ``best_of_n_score``, one partition of groups per task."""
    from pipeline.partition import partition_map, parts_for

    return partition_map(ds, "request_group", _best_in_partition, parts_for(ds), score=score)


def _best_in_partition(batch: dict, score: str) -> dict:
    names = expression.columns(score, KEY)
    n = len(batch["id"])
    data = {c: np.asarray(batch[c]) for c in names}
    scores = expression.evaluate(score, data, KEY) if names else np.zeros(n)
    scores = np.broadcast_to(np.asarray(scores, dtype=np.float64), (n,))
    ids = [str(i) for i in batch["id"]]
    drop = losers(
        ids, [str(g) for g in batch["request_group"]], [str(r) for r in batch["drop_reason"]], scores
    )
    return _mark(batch, drop, dict(zip(ids, scores.tolist())))


def _mark(batch: dict, drop: dict, scores: dict) -> dict:
    before = current_reasons(batch)
    reasons = before.copy()
    beaten = np.array([i in drop for i in batch["id"]], dtype=bool)
    reasons[(reasons == "") & beaten] = "not_best_of_n"
    record_drops(batch, before, reasons, "best_of_n")
    batch["best_of_n_score"] = np.array([scores.get(i, np.nan) for i in batch["id"]], dtype=np.float64)
    return batch


class SFTPrompt:
    """TRL reads a ``prompt`` column as the prompt of a prompt-completion pair: the teacher's request is
    kept as ``teacher_prompt`` instead."""

    @classmethod
    def columns(cls) -> tuple[tuple, tuple]:
        return ("prompt",), ("teacher_prompt",)

    def __call__(self, batch: dict) -> dict:
        batch["teacher_prompt"] = batch.pop("prompt")
        return batch


def select_stages(cfg: DictConfig, available: set[str], task: dict) -> list[StageSpec]:
    """Best-of-n (when ``best_of_n.n_candidates > 1``) and, for ``output=sft``, the prompt renamed."""
    specs = []
    bon = cfg.get("best_of_n")
    if bon is not None and int(bon.n_candidates) > 1:
        score = str(bon.score)
        names = expression.columns(score, KEY)
        specs.append(
            StageSpec(
                name="best_of_n",
                fn=best_of_n,
                kwargs={"score": score},
                kind="select",
                pool="dataset",
                needs=("request_group", *names),
                adds=("best_of_n_score",),
                scores=("best_of_n_score",),
                keys={c: f"{KEY}={score!r}" for c in names},
            )
        )
    if cfg.output.get("format") == "sft" and "prompt" in available:
        specs.append(
            StageSpec(
                name="sft_prompt",
                fn=SFTPrompt,
                kind="prepare",
                needs=("prompt",),
                adds=("teacher_prompt",),
                **task,
            )
        )
    return specs
