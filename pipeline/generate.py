"""The generation phase: the plan, the teacher stage (one teacher per Ray actor) and its checkpoints.

Generation is a phase of its own because its results are checkpointed (:mod:`pipeline.checkpoint`):
what comes after always reads the checkpoints, so a first run and a resumed run go through exactly
the same code.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from generators.prompts.protocol import MultiStep
from generators.teachers.contract import FINISH_ERROR, Completion, Request
from generators.teachers.structure import Structure
from pipeline import faults
from pipeline.checkpoint import write_batch
from pipeline.select import expand
from pipeline.stages import StageSpec, apply_one, resources

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
    """Turns plan rows into generated rows and checkpoints every finished batch.

    The teacher (model load included) is built once, in ``__init__``, inside the actor.

    Args:
        teacher: Teacher config with ``_target_`` (see conf/teacher/).
        checkpoint_dir: Where finished batches are written (see :mod:`pipeline.checkpoint`).
        generator: The plan's generator; when it is multi-step (:mod:`generators.prompts.protocol`) every
            row runs all its teacher calls here and is checkpointed only once complete.
    """

    def __init__(self, teacher: dict, checkpoint_dir: str | None = None, generator=None, structure=None):
        from hydra.utils import instantiate

        self.teacher = instantiate(teacher, _convert_="all")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.generator = generator
        self.structure = Structure.from_config(structure)

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch["id"]]
        if not ids:
            return batch
        started_at, started = time.time(), time.perf_counter()
        steps = self._run_steps(batch, ids)
        seconds = time.perf_counter() - started
        completions = [row_steps[-1] for row_steps in steps]
        out = {k: list(v) for k, v in batch.items()}
        out.update(
            text=[c.text for c in completions],
            finish_reason=[_finish_reason(s) for s in steps],
            error=[next((c.error for c in s if c.error), "") for s in steps],
            prompt_tokens=[sum(c.prompt_tokens for c in s) for s in steps],
            completion_tokens=[sum(c.completion_tokens for c in s) for s in steps],
            teacher=[self.teacher.name] * len(ids),
            sampling=[sampling_record(self.teacher)] * len(ids),
        )
        if self.structure is not None:  # generator.structure: the filter drops what does not match
            out["structure_error"] = [s[-1].invalid or "" for s in steps]
        if isinstance(self.generator, MultiStep):
            rows = [{k: v[i] for k, v in out.items()} for i in range(len(ids))]
            finished = [self.generator.finish(row, s) for row, s in zip(rows, steps)]
            for key in finished[0]:
                out[key] = [f[key] for f in finished]
            out["steps"] = [json.dumps([c.text for c in s], ensure_ascii=False) for s in steps]
        faults.actor_batch(self.checkpoint_dir)  # reliability tests only (LITHO_FAULT=actor:N)
        if self.checkpoint_dir is not None:  # only complete rows: a failed step fails the row
            ok = [i for i, reason in enumerate(out["finish_reason"]) if reason != "error"]
            table = pa.table({k: [v[i] for i in ok] for k, v in out.items()})
            timing = {
                "started_at": started_at,
                "seconds": seconds,
                "worker": f"{platform.node()}:{os.getpid()}",
            }
            write_batch(self.checkpoint_dir, table, timing)
        errors = sum(reason == "error" for reason in out["finish_reason"])
        if errors:
            log.warning("%d of %d requests failed in this batch", errors, len(ids))
        return {k: np.asarray(v, dtype=object if isinstance(v[0], str) else None) for k, v in out.items()}

    def _run_steps(self, batch: dict, ids: list[str]) -> list[list[Completion]]:
        """Every teacher call of every row: one call for plain generators, up to ``max_steps`` for
        multi-step ones (all rows of the batch advance together, one ``generate`` call per step)."""
        multi = isinstance(self.generator, MultiStep)
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(ids))]
        steps: list[list[Completion]] = [[] for _ in ids]
        pending = [(i, json.loads(p)) for i, p in enumerate(batch["prompt"])]
        structure_of = getattr(self.generator, "step_structure", None)
        for step in range(self.generator.max_steps if multi else 1):
            # Later steps get their own request ids, so backends seed their sampling differently.
            requests = [
                Request(
                    ids[i] if step == 0 else f"{ids[i]}/{step}",
                    tuple(m),
                    structure_of(rows[i], step) if structure_of else self.structure,
                )
                for i, m in pending
            ]
            completions = self.teacher.generate(requests)
            if [c.id for c in completions] != [r.id for r in requests]:
                raise RuntimeError(f"teacher {self.teacher.name} returned completions out of order")
            following = []
            for (i, _), completion in zip(pending, completions):
                steps[i].append(completion)
                if multi and completion.finish_reason != FINISH_ERROR:
                    messages = self.generator.followup(rows[i], steps[i])
                    if messages:
                        following.append((i, messages))
            pending = following
            if not pending:
                break
        return steps


def sampling_record(teacher) -> str:
    """The row's ``sampling`` column: the teacher's :class:`SamplingParams` plus what else changes its texts
    (``sampling_extra``, e.g. the token-aware settings), as sorted JSON."""
    record = json.loads(teacher.sampling.to_json())
    record.update(getattr(teacher, "sampling_extra", None) or {})
    return json.dumps(record, sort_keys=True)


def _finish_reason(steps: list[Completion]) -> str:
    """A row failed if any step failed; otherwise it ended as its last step did."""
    return FINISH_ERROR if any(c.finish_reason == FINISH_ERROR for c in steps) else steps[-1].finish_reason


def build_generator(cfg: DictConfig):
    """The configured generator; its ``filters`` block is the pipeline's (see :func:`generator_filters`)."""
    from hydra.utils import instantiate

    from pipeline.validate import check_missing

    check_missing(cfg, "generator")
    settings = OmegaConf.to_container(cfg.generator, resolve=True)
    settings.pop("filters", None)
    settings.pop("structure", None)
    generator = instantiate(settings, _convert_="all")
    if user_structure(cfg) is not None and hasattr(generator, "step_structure"):
        raise ConfigError(
            f"generator.structure: the {generator.name} generator constrains its own steps; "
            "use generator.structured=true|false, or a single-step generator (textbook, rephrase)"
        )
    return generator


def user_structure(cfg: DictConfig) -> dict | None:
    """``generator.structure``: a JSON schema or regex every answer of a single-step generator must match.

    Raises:
        ConfigError: a structure that is not one (checked before Ray starts).
    """
    value = cfg.generator.get("structure") if "generator" in cfg else None
    if value is None:
        return None
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    Structure.from_config(value)
    return value


def generator_filters(cfg: DictConfig) -> dict[str, dict]:
    """The generator's own scorers and rules, ``{name: {_target_: ..., **kwargs}}`` (conf/generator/*.yaml)."""
    rules = {}
    if "generator" in cfg and cfg.generator.get("filters"):
        rules = OmegaConf.to_container(cfg.generator.filters, resolve=True)
    if user_structure(cfg) is not None:
        rules["structure"] = {"_target_": "filters.rules.generated.StructureFilter"}
    return rules


def make_plan(cfg: DictConfig, generator) -> list[dict]:
    """The requests of this config and seed, best-of-n candidates expanded; ids are unique."""
    plan = generator.plan(int(cfg.n), int(cfg.seed))
    if cfg.get("best_of_n") is not None:
        plan = expand(plan, cfg.best_of_n.n_candidates, int(cfg.seed))
    if len({row["id"] for row in plan}) != len(plan):  # ids key checkpoints, dedup and shards
        raise RuntimeError(f"generator {generator.name} planned repeated request ids")
    return plan


def generate_spec(cfg: DictConfig, generator, checkpoint_dir: Path) -> StageSpec:
    """The teacher stage: an actor pool with the ``cluster.teacher_*`` resources."""
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    multi = isinstance(generator, MultiStep)
    structure = user_structure(cfg)
    adds = TEACHER_COLUMNS + (tuple(getattr(generator, "output_columns", ())) + ("steps",) if multi else ())
    adds += ("structure_error",) if structure is not None else ()
    kwargs = {"teacher": teacher, "checkpoint_dir": str(checkpoint_dir), "generator": generator}
    return StageSpec(
        name="generate",
        fn=GenerateStage,
        kwargs={**kwargs, "structure": structure},
        kind="generate",
        pool="actors",
        needs=("id", "prompt"),
        adds=adds,
        scores=("completion_tokens", *getattr(generator, "score_columns", ())),
        timed=False,  # its rows come back from the checkpoints; the phase is timed in the driver
        **resources(cluster, "generate", "teacher"),
    )


def generate(todo: list[dict], spec: StageSpec):
    """Answer ``todo`` with the teacher stage; return the (materialized) failed rows.

    Successful rows go to checkpoint files, not into the returned dataset.
    """
    import ray

    ds = apply_one(ray.data.from_arrow(pa.Table.from_pylist(todo)), spec)
    return ds.map_batches(_only_errors, batch_format="numpy").materialize()


def generated(files: list[Path], plan_ids: frozenset, errors=None):
    """The generated rows of this plan: checkpoints (and this run's failures) as one dataset."""
    import ray

    ds = ray.data.read_parquet([str(f) for f in files]) if files else None
    if ds is not None:
        ds = ds.map_batches(_only_ids, fn_kwargs={"ids": plan_ids}, batch_format="numpy")
    if errors is not None and errors.count():
        ds = errors if ds is None else ds.union(errors)
    if ds is None:
        raise ConfigError("every request failed; see the log above for the teacher's errors")
    return ds


def _only_errors(batch: dict) -> dict:
    keep = np.asarray(batch["finish_reason"], dtype=object) == "error"
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def _only_ids(batch: dict, ids: frozenset) -> dict:
    keep = np.array([i in ids for i in batch["id"]], dtype=bool)
    return {k: np.asarray(v)[keep] for k, v in batch.items()}
