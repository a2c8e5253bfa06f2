"""``litho score``: the scoring and filter stages alone, over an existing Parquet/JSONL corpus.

Every input column is kept; scores are added; rows a filter drops go to ``rejected/`` with
their reason. Nothing is generated and nothing is deduplicated unless ``dedup=exact``.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig, OmegaConf

from pipeline.validate import validate_common


def run(cfg: DictConfig) -> dict:
    from pipeline.cluster import connect
    from pipeline.inputs import input_files, read_corpus
    from pipeline.outputs import finish_run

    started = time.perf_counter()
    input_files(cfg.input)  # fail before Ray starts
    out = validate_common(cfg)
    with connect(OmegaConf.to_container(cfg.cluster, resolve=True)):
        ds = read_corpus(cfg.input, cfg.text_column, cfg.id_column)
        return finish_run(
            ds,
            cfg,
            out,
            {},
            {},
            started,
            source=f"score:{cfg.input}",
            text_column=cfg.text_column,
            clean=False,
        )
