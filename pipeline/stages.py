"""One description per stage and one way to run it, in the spirit of Ray Data LLM's ``StatefulStage``
and ``Processor`` and datatrove's ``PipelineStep``.

A :class:`StageSpec` says what a stage is (a class from ``filters/`` or ``generators/``, or a
dataset-level function of ``pipeline/``), how it runs (an actor pool that holds heavy state, light
tasks, or one step over the whole dataset), with which resources (from ``cluster/``), which columns
it needs and adds, and which score version it writes. :func:`validate` checks a list of specs
against the input's columns before Ray starts; :func:`apply` runs them with one loop.

Every map stage is timed inside its worker; the seconds travel with the rows as an internal
``_litho_s_<stage>`` column (8 bytes a row) that the manifest sums and the writer drops, so the
timings are exact whatever Ray fuses or splits.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from generators.errors import ConfigError

INTERNAL_PREFIX = "_litho_"  # internal columns: never written to a shard
POOLS = ("actors", "tasks", "dataset")
KINDS = ("generate", "prepare", "score", "filter", "dedup", "select")


def seconds_column(stage: str) -> str:
    return f"{INTERNAL_PREFIX}s_{stage}"


@dataclass(frozen=True)
class StageSpec:
    """What one stage is and how it runs.

    Args:
        name: Unique stage name (manifest, per-stage counts, ``cluster.stages.<name>`` overrides).
        fn: A stage class (``__init__(**kwargs)`` builds it, ``__call__(batch) -> batch``) for ``actors``
            and ``tasks``; for ``dataset``, a function ``fn(ds, **kwargs) -> ds`` over the whole dataset.
        kwargs: Constructor (or function) keyword arguments.
        kind: ``generate``, ``prepare``, ``score``, ``filter``, ``dedup`` or ``select``.
        pool: ``actors`` (one instance per actor, held for the pass: models, tokenizers), ``tasks``
            (built per batch: cheap stages) or ``dataset`` (a global step: dedup, quantiles, best-of-n).
        concurrency: Actors in the pool, or most tasks at once (None: Ray decides).
        num_cpus: Logical CPUs per actor or task.
        num_gpus: GPUs per actor (0: none).
        resources: Custom Ray resources per actor or task (e.g. ``{"teacher_node": 1}``).
        batch_size: Rows per batch (None: Ray's blocks).
        needs: Columns the stage reads; :func:`validate` checks an earlier stage or the input has them.
        adds: Columns the stage writes.
        scores: The added numeric columns that are quality scores (summarized in the manifest).
        version: Score version written to the shard metadata (e.g. ``token_metrics_v2``), or several for a
            stage that scores for several rule sets (``("repetition_v2", "c4_v1")``).
        keys: Config key to name in the error when a needed column is missing, per column.
        timed: Add the per-row seconds column (off for stages whose rows do not flow on).
        in_flight: Batches an actor works on at once (a stage whose ``__call__`` is a coroutine: Ray
            Data runs it on the actor's event loop, as Ray Data LLM runs its vLLM stage).
    """

    name: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)
    kind: str = "score"
    pool: str = "tasks"
    concurrency: int | None = None
    num_cpus: float = 0.25
    num_gpus: float = 0
    resources: dict | None = None
    batch_size: int | None = None
    needs: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    scores: tuple[str, ...] = ()
    version: str | tuple[str, ...] | None = None
    keys: dict = field(default_factory=dict)
    timed: bool = True
    in_flight: int = 1

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"stage {self.name}: pool={self.pool}; use one of {POOLS}")
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name}: kind={self.kind}; use one of {KINDS}")


def resources(cluster: dict, name: str, pool: str) -> dict:
    """``concurrency``, ``num_cpus``, ``num_gpus``, ``resources`` and ``batch_size`` of a stage from
    ``cluster/``: the pool's keys (``teacher_*``, ``scorer_*``, ``task_*``), then ``cluster.stages.<name>``."""
    if pool == "teacher":
        base = {
            "concurrency": cluster["teacher_actors"],
            "num_cpus": cluster["teacher_cpus"],
            "num_gpus": cluster.get("teacher_gpus") or 0,
            "batch_size": cluster["teacher_batch_size"],
            "resources": cluster.get("teacher_resources") or None,
        }
    elif pool == "scorer":
        base = {
            "concurrency": cluster["scorer_actors"],
            "num_cpus": cluster.get("scorer_cpus", 0.5),
            "num_gpus": cluster.get("scorer_gpus") or 0,
            "batch_size": cluster["scorer_batch_size"],
            "resources": cluster.get("scorer_resources") or None,
        }
    elif pool == "task":
        base = {
            "concurrency": cluster.get("task_concurrency"),
            "num_cpus": cluster.get("task_cpus", 0.25),
            "num_gpus": 0,
            "batch_size": None,
            "resources": None,
        }
    else:
        raise ValueError(f"unknown resource pool {pool}")
    override = dict((cluster.get("stages") or {}).get(name) or {})
    unknown = sorted(set(override) - set(base))
    if unknown:
        raise ConfigError(f"cluster.stages.{name}: unknown keys {unknown}; use {sorted(base)}")
    return {**base, **override}


def columns_of(fn: Callable, kwargs: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(needs, adds)`` of a stage class: its ``columns(**kwargs)`` classmethod, else a cheap instance's
    ``needs()`` (rules: building one checks its arguments too)."""
    if hasattr(fn, "columns"):
        accepted = inspect.signature(fn.columns).parameters
        if any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            return fn.columns(**kwargs)
        return fn.columns(**{k: v for k, v in kwargs.items() if k in accepted})
    instance = fn(**kwargs)
    return tuple(instance.needs()), ()


def validate(specs: list[StageSpec], available: Iterable[str]) -> set[str]:
    """Check that every needed column is made by the input or an earlier stage; return all columns.

    Raises:
        ConfigError: one line naming the config key (or the stage), the missing column and the known ones.
    """
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"stages {repeated} appear twice; give each generator filter its own name")
    known = set(available)
    for spec in specs:
        missing = [c for c in spec.needs if c not in known]
        if missing:
            column = missing[0]
            key = spec.keys.get(column, f"stage {spec.name}")
            visible = sorted(c for c in known if not c.startswith(INTERNAL_PREFIX))
            raise ConfigError(
                f"{key}: no such column {column!r} at this point of the run; known columns: {', '.join(visible)}"
            )
        known.update(spec.adds)
    return known


class StageRunner:
    """Builds a stage once (per actor, or per task batch) and runs it on numpy batches, timed."""

    def __init__(self, fn: Callable, kwargs: dict, name: str, timed: bool = True):
        self.stage = fn(**kwargs) if inspect.isclass(fn) else functools.partial(fn, **kwargs)
        self.column = seconds_column(name) if timed else None

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        out = self.stage(batch)
        if self.column is not None and out:
            n = len(next(iter(out.values())))
            out[self.column] = np.full(n, (time.perf_counter() - started) / max(n, 1))
        return out


class AsyncStageRunner(StageRunner):
    """:class:`StageRunner` for a stage whose ``__call__`` is a coroutine (several batches in flight)."""

    async def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        out = await self.stage(batch)
        if self.column is not None and out:
            n = len(next(iter(out.values())))
            out[self.column] = np.full(n, (time.perf_counter() - started) / max(n, 1))
        return out


def run_task(batch: dict, fn: Callable, kwargs: dict, name: str = "", timed: bool = False) -> dict:
    """One batch of a stage run as a Ray task: the stage is built for the batch (cheap stages only)."""
    return StageRunner(fn, kwargs, name, timed)(batch)


SMALL_RUN_ROWS = 2_000  # up to this many rows, shareable actor stages run as tasks (see run_shared)
_HELD: dict[str, tuple[str, StageRunner]] = {}  # this worker process's stage instances, by stage name


def shareable(spec: StageSpec) -> bool:
    """A stage class that says ``shareable = True`` holds nothing a run changes (a tokenizer, rule
    tables, a scorer model), so a worker process may keep one instance for later batches and runs."""
    return bool(getattr(spec.fn, "shareable", False)) and not spec.num_gpus and not spec.resources


def run_shared(batch: dict, fn: Callable, kwargs: dict, name: str = "", timed: bool = True) -> dict:
    """One batch of a shareable actor stage run as a Ray task in a small run: the worker process builds
    the stage once and keeps it (one instance per stage name, replaced when its arguments change).

    A small run gains twice: no actor process is started and loaded per stage and per run (a few
    seconds each on 2 CPUs, most of a small run's scoring time), and Ray fuses the stage with the
    light tasks around it into one task per block."""
    key = f"{fn.__module__}.{fn.__qualname__}:{kwargs!r}"
    held = _HELD.get(name)
    if held is None or held[0] != key:
        _HELD[name] = held = (key, StageRunner(fn, kwargs, name, timed))
    return held[1](batch)


def _named(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def apply_one(ds, spec: StageSpec, small: bool = False):
    """Add one stage to the lazy dataset ``ds`` (or run a dataset-level stage). In a ``small`` run
    (at most :data:`SMALL_RUN_ROWS` rows) a :func:`shareable` actor stage runs as tasks instead."""
    if spec.pool == "dataset":
        return spec.fn(ds, **spec.kwargs)
    remote = {"num_cpus": spec.num_cpus}
    if spec.num_gpus:
        remote["num_gpus"] = spec.num_gpus
    if spec.resources:
        remote["resources"] = dict(spec.resources)
    shared = spec.pool == "actors" and small and shareable(spec)
    if spec.pool == "actors" and not shared:
        from ray.data import ActorPoolStrategy

        from pipeline import faults

        if os.environ.get(faults.ENV):  # an injected fault reaches the actors of a Ray this run joined too
            remote["runtime_env"] = {"env_vars": {faults.ENV: os.environ[faults.ENV]}}

        # A subclass named after the stage, so Ray's operator names read MapBatches(TokenMetrics).
        is_async = inspect.iscoroutinefunction(spec.fn.__call__)
        runner = type(_named(spec.fn), (AsyncStageRunner if is_async else StageRunner,), {})
        strategy = {}
        if is_async and spec.in_flight > 1:  # Ray Core runs that many calls of the actor at once
            strategy = {
                "max_concurrent_calls_per_actor": spec.in_flight,
                "max_tasks_in_flight_per_actor": spec.in_flight,
            }
        return ds.map_batches(
            runner,
            fn_constructor_kwargs={
                "fn": spec.fn,
                "kwargs": spec.kwargs,
                "name": spec.name,
                "timed": spec.timed,
            },
            batch_size=spec.batch_size,
            compute=ActorPoolStrategy(size=spec.concurrency or 1, **strategy),
            batch_format="numpy",
            **remote,
        )
    runner = run_shared if shared else run_task
    task = functools.partial(runner, fn=spec.fn, kwargs=spec.kwargs, name=spec.name, timed=spec.timed)
    functools.update_wrapper(task, runner)
    task.__name__ = _named(spec.fn)
    # A shared stage keeps its pool's parallelism (one actor by default), so a worker holds one model.
    concurrency = (spec.concurrency or 1) if shared else spec.concurrency
    if concurrency:  # (`compute=`, not Ray's deprecated `concurrency=`, which warns on the terminal)
        from ray.data import TaskPoolStrategy

        remote["compute"] = TaskPoolStrategy(size=concurrency)
    return ds.map_batches(task, batch_size=spec.batch_size, batch_format="numpy", **remote)


def apply(ds, specs: list[StageSpec], timings: dict | None = None, rows: int | None = None):
    """Apply ``specs`` in order. Before a dataset-level stage the rows so far are materialized, so its
    driver-side seconds (``timings[name]``) are its own and not the upstream stages'. ``rows``, when
    known, at most :data:`SMALL_RUN_ROWS`: a small run (:func:`apply_one`)."""
    small = rows is not None and rows <= SMALL_RUN_ROWS
    for spec in specs:
        if spec.pool == "dataset":
            ds = ds.materialize()
            started = time.perf_counter()
            ds = apply_one(ds, spec).materialize()
            if timings is not None:
                timings[spec.name] = time.perf_counter() - started
        else:
            ds = apply_one(ds, spec, small)
    return ds
