"""``litho dedup``: exact and near-duplicate removal alone, over an existing Parquet/JSONL corpus.

Kept rows are written with every input column; removed rows go to ``rejected/`` with
``drop_reason`` and ``duplicate_of``; the manifest counts them.
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
    input_files(cfg.input)
    out = validate_common(cfg, tokenizer=False)
    with connect(OmegaConf.to_container(cfg.cluster, resolve=True)):
        ds = read_corpus(cfg.input, cfg.text_column, cfg.id_column)
        return finish_run(
            ds,
            cfg,
            out,
            {},
            {},
            started,
            source=f"dedup:{cfg.input}",
            text_column=cfg.text_column,
            score=False,
        )
