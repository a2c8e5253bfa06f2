"""The generation phase: the plan, the teacher stage (one teacher per Ray actor) and its checkpoints.

Generation is a phase of its own because its results are checkpointed (:mod:`pipeline.checkpoint`):
the teacher stage writes its texts to the checkpoints and hands on only its failed rows, and what
comes after reads the checkpoints block by block (pipeline/plan.py), so a first run and a resumed
run go through exactly the same code and every text crosses the object store once.
"""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from generators.prompts.protocol import MultiStep
from generators.teachers.structure import Structure
from pipeline.checkpoint import read_block
from pipeline.plan import Plan, blocks_dataset, find_finished, plan_blocks
from pipeline.stages import StageSpec, apply_one, resources
from pipeline.teacher_stage import TEACHER_COLUMNS, GenerateStage, sampling_record  # noqa: F401

log = logging.getLogger(__name__)


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


def make_plan(cfg: DictConfig, generator) -> Plan:
    """The requests of this config and seed, best-of-n candidates expanded (rows are planned in Ray)."""
    bon = cfg.get("best_of_n")
    return Plan(generator, int(cfg.n), int(cfg.seed), bon.n_candidates if bon is not None else 1)


def generate_spec(cfg: DictConfig, generator, checkpoint_dir: Path) -> StageSpec:
    """The teacher stage: an actor pool with the ``cluster.teacher_*`` resources."""
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    multi = isinstance(generator, MultiStep)
    structure = user_structure(cfg)
    adds = TEACHER_COLUMNS + (tuple(getattr(generator, "output_columns", ())) + ("steps",) if multi else ())
    adds += ("structure_error",) if structure is not None else ()
    kwargs = {"teacher": teacher, "checkpoint_dir": str(checkpoint_dir), "generator": generator}
    # The run's id: the actors' progress records name it, so the driver counts this run's only.
    kwargs.update(structure=structure, run=uuid.uuid4().hex)
    return StageSpec(
        name="generate",
        fn=GenerateStage,
        kwargs=kwargs,
        in_flight=_in_flight(cluster.get("teacher_batches_in_flight", 1)),
        kind="generate",
        pool="actors",
        needs=("id", "prompt"),
        adds=adds,
        scores=("completion_tokens", *getattr(generator, "score_columns", ())),
        timed=False,  # its rows come back from the checkpoints; the phase is timed in the driver
        **resources(cluster, "generate", "teacher"),
    )


def _in_flight(value) -> int:
    """``cluster.teacher_batches_in_flight``, checked before Ray starts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"cluster.teacher_batches_in_flight={value}: give a positive integer (e.g. 4)")
    return value


def to_generate(plan: Plan, checkpoint_dir: Path):
    """The plan rows the teacher still has to answer, and the per-block plan ids (None on a first run).

    On a first run (no checkpoints for this teacher yet) that is the whole plan. Otherwise one task per
    plan block compares the block's plan ids with its checkpoint ids; the result, one row per block with
    its plan ids (8 bytes each) and the indices still to do, is kept in the object store for
    :func:`generated`, and only the rows still to do are planned again.

    Returns:
        ``(rows, blocks, todo)``: the lazy dataset of rows to generate, the materialized blocks (or None)
        and how many rows that is.
    """
    ds, directory = blocks_dataset(plan), Path(checkpoint_dir)
    if not directory.is_dir():
        return ds.map_batches(plan_blocks, fn_kwargs={"plan": plan}, **_PLAN_TASK), None, plan.rows
    if next(directory.glob("gen-*.parquet"), None) is not None:  # litho before plan blocks wrote them here
        log.warning(
            "%s: checkpoints of an earlier litho version (one folder, no plan blocks) are not reused; "
            "this run asks the teacher again for their requests",
            directory,
        )
    kwargs = {"plan": plan, "checkpoint_dir": str(checkpoint_dir)}
    blocks = ds.map_batches(find_finished, fn_kwargs=kwargs, **_PLAN_TASK).materialize()
    todo = int(blocks.sum("n_todo") or 0)
    from ray.data.expressions import col

    rows = blocks.filter(expr=col("n_todo") > 0).select_columns(["block", "todo"])
    return rows.map_batches(plan_blocks, fn_kwargs={"plan": plan}, **_PLAN_TASK), blocks, todo


_PLAN_TASK = {"batch_size": 1, "batch_format": "numpy", "num_cpus": 0.25}  # one plan block per task call


def generate(todo, spec: StageSpec):
    """Answer the plan rows ``todo`` with the teacher stage; return the (materialized) failed rows.

    Successful rows go to checkpoint files, not into the returned dataset. The rows to generate are
    planned first (into the object store, spilled to disk when large): teacher actors may hold every
    CPU of a small cluster for their whole pass, and plan tasks upstream of them would then never run.
    """
    planned = todo.materialize()
    actors = int(spec.concurrency or 1)
    if actors > 1:
        # An actor takes a whole input block, and a plan block is 8,192 rows: split a small plan so that
        # every actor gets batches (at most 4 blocks an actor, none smaller than a teacher batch).
        blocks = min(math.ceil(planned.count() / max(int(spec.batch_size or 1), 1)), 4 * actors)
        if blocks > planned.num_blocks():
            planned = planned.repartition(blocks).materialize()
    return apply_one(planned, spec).materialize()


def generated(plan: Plan, checkpoint_dir: Path, blocks=None, errors=None):
    """The generated rows of this plan: its checkpoints, read one plan block per task (only the block's
    plan ids when ``blocks`` comes from :func:`to_generate`), and this run's failed rows."""
    # ``blocks`` as it is, not ``select_columns``: a projection is a task of its own that asks for a whole
    # CPU. Every task here asks a quarter, as the plan tasks: the scorer actors of the same pass hold
    # theirs for the whole pass, and on 2 CPUs a task asking for a whole one would never be scheduled
    # beside them (a rerun of a run with a judge waited forever).
    source = blocks_dataset(plan) if blocks is None else blocks
    ds = source.map_batches(_read_blocks, fn_kwargs={"checkpoint_dir": str(checkpoint_dir)}, **_PLAN_TASK)
    if errors is not None and errors.count():
        ds = ds.union(errors)
    return ds


def _read_blocks(batch: dict, checkpoint_dir: str) -> pa.Table:
    ids = batch.get("ids")
    tables = [
        read_block(checkpoint_dir, int(b), None if ids is None else ids[i])
        for i, b in enumerate(batch["block"])
    ]
    tables = [t for t in tables if t is not None]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
