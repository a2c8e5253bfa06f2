"""Selection after processing: best-of-n among candidates, and the SFT format's column names.

Best-of-n asks for several candidates per request and keeps the best by a score expression
(:mod:`pipeline.expression`). Candidates are separate plan rows sharing a ``request_group`` (the id
the request would have had alone); the candidate index is part of each candidate's id content.
After scoring, filters and dedup, the driver pulls ids, groups, drop reasons and the score columns
the expression names (a few bytes a row), picks the best kept candidate per group (ties: smallest
id), and marks the others ``not_best_of_n`` with a map over the blocks.
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
    and add ``best_of_n_score``. ``ds`` is materialized; only narrow columns reach the driver."""
    from pipeline.process import pull

    names = expression.columns(score, KEY)
    table = pull(ds, ["id", "request_group", "drop_reason", *names])
    data = {c: table.column(c).to_numpy(zero_copy_only=False) for c in names}
    scores = expression.evaluate(score, data, KEY) if names else np.zeros(table.num_rows)
    drop = losers(
        table.column("id").to_pylist(),
        table.column("request_group").to_pylist(),
        table.column("drop_reason").to_pylist(),
        scores,
    )
    by_id = dict(zip(table.column("id").to_pylist(), scores.tolist()))
    log.info("best-of-n: %d candidates not kept", len(drop))
    return ds.map_batches(_mark, fn_kwargs={"drop": drop, "scores": by_id}, batch_format="numpy")


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
