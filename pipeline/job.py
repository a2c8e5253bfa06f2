"""A job: one command's config, checked and turned into its list of stages before Ray starts.

Everything a user can get wrong is found here, in the driver, before a Ray worker starts or a model
loads: config values, the output directory, input files and their columns, and the stage list
itself (every column a stage, a threshold, a quantile band, ``keep_by`` or the best-of-n expression
reads must be made by the input or an earlier stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import checkpoint, stages, validate
from pipeline.generate import build_generator, generate_spec, generator_filters, make_plan, user_structure
from pipeline.plan import Plan
from pipeline.process import stage_list
from pipeline.select import select_stages
from pipeline.stages import StageSpec

# Columns the corpus reader adds to every input row (pipeline/inputs.py).
READER_COLUMNS = ("id", "source_file", "source_row", "drop_reason")


@dataclass
class Job:
    """One command's checked config and stages.

    Args:
        command: ``generate``, ``score`` or ``dedup``.
        cfg: The composed config.
        out: The output directory (created, writable).
        process: Clean, score, filter and dedup stages, in run order (:mod:`pipeline.process`).
        select: Best-of-n and format stages after them (:mod:`pipeline.select`).
        text_column: Column holding the text.
        source: What the rows came from (shard metadata).
        generate: The teacher stage (generate only).
        generator: The configured generator (generate only).
        plan: The planned requests, by index (generate only; its rows are planned inside Ray).
        checkpoint_dir: Where finished teacher batches are kept (generate only).
        input_scores: Numeric input columns, summarized as they came (score and dedup only).
    """

    command: str
    cfg: DictConfig
    out: Path
    process: list[StageSpec]
    select: list[StageSpec]
    text_column: str = "text"
    source: str = ""
    generate: StageSpec | None = None
    generator: object = None
    plan: Plan | None = None
    checkpoint_dir: Path | None = None
    input_scores: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: DictConfig, command: str = "generate") -> Job:
        """Check ``cfg`` for ``command`` and build its stages; nothing starts and no model loads.

        Raises:
            ConfigError: the first user error found, as one line naming the key and the fix.
        """
        if command == "generate":
            return cls._generate(cfg)
        if command in ("score", "dedup"):
            return cls._corpus(cfg, command)
        raise ValueError(f"unknown command {command}")

    @classmethod
    def _generate(cls, cfg: DictConfig) -> Job:
        validate.check_generate(cfg)
        out = validate.check_common(cfg)
        generator = build_generator(cfg)
        validate.check_format(cfg, generator)
        plan = make_plan(cfg, generator)
        teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
        structure = user_structure(cfg)  # constrained texts are other texts: their own checkpoints
        keyed = {**teacher, "_structure": structure} if structure is not None else teacher
        ckpt_dir = out / ".litho" / "generations" / checkpoint.teacher_fingerprint(keyed)
        teach = generate_spec(cfg, generator, ckpt_dir)
        process = stage_list(cfg, "generate", generator_filters=generator_filters(cfg))
        # The plan's columns from one planned row: the stage list is checked before Ray starts.
        select = _select(cfg, [teach, *process], [*plan.columns(), "drop_reason"])
        return cls(
            "generate",
            cfg,
            out,
            process,
            select,
            source=generator.name,
            generate=teach,
            generator=generator,
            plan=plan,
            checkpoint_dir=ckpt_dir,
        )

    @classmethod
    def _corpus(cls, cfg: DictConfig, command: str) -> Job:
        from pipeline.inputs import input_columns

        text_column = str(cfg.text_column)
        names, numbers = input_columns(cfg.input, text_column, cfg.get("id_column"))
        out = validate.check_common(cfg, tokenizer=command == "score")
        validate.check_format(cfg)
        process = stage_list(cfg, command, text_column=text_column)
        select = _select(cfg, process, [*names, *READER_COLUMNS])
        scores = tuple(c for c in numbers if c not in READER_COLUMNS and c != "source_row")
        return cls(
            command,
            cfg,
            out,
            process,
            select,
            text_column=text_column,
            source=f"{command}:{cfg.input}",
            input_scores=scores,
        )

    @property
    def cluster(self) -> dict:
        return OmegaConf.to_container(self.cfg.cluster, resolve=True)

    @property
    def allow_network(self) -> bool:
        return bool(self.cfg.get("teacher", {}).get("allow_network", False))

    @property
    def stages(self) -> list[StageSpec]:
        """Every stage of the job, in run order."""
        return ([self.generate] if self.generate else []) + self.process + self.select

    def score_columns(self) -> tuple[str, ...]:
        """Columns the manifest summarizes: every stage's scores, and numeric input columns."""
        seen = dict.fromkeys(self.input_scores)
        for spec in self.stages:
            seen.update(dict.fromkeys(spec.scores))
        return tuple(seen)

    def score_versions(self) -> list[str]:
        """Versions of the scores this run computed (shard metadata and manifest)."""
        found = [(s.version,) if isinstance(s.version, str) else s.version or () for s in self.stages]
        return [v for versions in found for v in versions]


def _select(cfg: DictConfig, before: list[StageSpec], inputs: list[str]) -> list[StageSpec]:
    """The selection stages, and the whole list validated against the input's columns."""
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    available = stages.validate(before, inputs)
    task = {"pool": "tasks", **stages.resources(cluster, "sft_prompt", "task")}
    select = select_stages(cfg, available, task)
    stages.validate(before + select, inputs)
    return select
