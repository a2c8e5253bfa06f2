"""``litho generate``: plan → teacher → clean/score/filter → dedup → Parquet shards + manifest.

``run(cfg)`` does the work and is what tests call (with ``hydra.compose``); ``main`` is the thin
Hydra entry point (``python -m pipeline.run [overrides]``, also used by ``ray job submit``).
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from pipeline import checkpoint
from pipeline.validate import validate_common, validate_generate

log = logging.getLogger(__name__)

OUTPUT_FOLDERS = ("data", "rejected")


def run(cfg: DictConfig) -> dict:
    """Run the whole pipeline for one composed config; return the manifest."""
    from hydra.utils import instantiate

    from pipeline import best_of_n, formats, graph
    from pipeline.cluster import connect
    from pipeline.outputs import finish_run

    started = time.perf_counter()
    validate_generate(cfg)  # first: the tokenizer defaults to the teacher's model
    out = validate_common(cfg)
    generator = instantiate(cfg.generator, _convert_="all")
    formats.validate(cfg, generator)
    plan = generator.plan(int(cfg.n), int(cfg.seed))
    if cfg.get("best_of_n") is not None:
        plan = best_of_n.expand(plan, cfg.best_of_n.n_candidates, int(cfg.seed))
    if len({row["id"] for row in plan}) != len(plan):  # ids key checkpoints, dedup and shards
        raise RuntimeError(f"generator {generator.name} planned repeated request ids")
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    ckpt_dir = out / ".litho" / "generations" / checkpoint.teacher_fingerprint(teacher)
    done = checkpoint.finished(ckpt_dir)
    todo = [row for row in plan if row["id"] not in done]
    log.info(
        "plan: %d requests, %d already generated, %d to generate", len(plan), len(plan) - len(todo), len(todo)
    )
    timings = {"plan_s": time.perf_counter() - started}
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    with connect(cluster, allow_network=bool(cfg.teacher.get("allow_network", False))):
        t0 = time.perf_counter()
        errors = graph.generate(todo, teacher, ckpt_dir, cluster, generator) if todo else None
        timings["generate_s"] = time.perf_counter() - t0
        plan_ids = frozenset(row["id"] for row in plan)
        done = checkpoint.finished(ckpt_dir)
        files = sorted({path for rid, path in done.items() if rid in plan_ids})
        ds = graph.generated(files, plan_ids, errors)
        if ds is None:
            raise ConfigError("every request failed; see the log above for the teacher's errors")
        counts = {
            "planned": len(plan),
            "reused": len(plan) - len(todo),
            "generated": len(todo) - (errors.count() if errors is not None else 0),
            "teacher_errors": errors.count() if errors is not None else 0,
        }
        manifest = finish_run(ds, cfg, out, counts, timings, started, generator.name)
    return manifest


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.cli import report_and_exit

    report_and_exit(lambda: run(cfg), cfg)


if __name__ == "__main__":
    main()
