"""Output formats: what happens between processing and the shards, and after them.

* :func:`prepare` — before accounting and writing: best-of-n selection, format checks.
* :func:`rows_per_shard` — shard size by rows (``output.rows_per_shard``) or by bytes
  (``output.max_shard_bytes``, the rows' in-memory Arrow size).
* :func:`typed_columns` — inside the writer: JSON columns (``messages``, annotation layers) become
  typed Arrow lists, so readers get ``list<struct<role, content>>`` etc. They travel through the
  graph as JSON because Ray's numpy batches would turn nested lists into pickled objects.
* :func:`after_write` — packed token shards (``output.pack_seq_len``) and the dataset card.

Schemas and examples: docs/formats.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError

log = logging.getLogger(__name__)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
RELATION = pa.struct([("head", pa.string()), ("relation", pa.string()), ("tail", pa.string())])
JSON_COLUMNS = {
    "messages": pa.list_(MESSAGE),
    "layer_terms": pa.list_(pa.string()),
    "layer_claims": pa.list_(pa.string()),
    "layer_steps": pa.list_(pa.string()),
    "layer_relations": pa.list_(RELATION),
}
FORMATS = ("pretrain", "sft")


def validate(cfg: DictConfig, generator) -> None:
    """Driver-side checks of the output and best-of-n keys, before any generation.

    Raises:
        ConfigError: an unknown format, SFT without conversations, a bad size or score expression.
    """
    from pipeline import best_of_n

    output = cfg.output
    fmt = output.get("format", "pretrain")
    if fmt not in FORMATS:
        raise ConfigError(f"output.format={fmt}: use one of {list(FORMATS)}")
    if fmt == "sft" and "messages" not in getattr(generator, "output_columns", ()):
        raise ConfigError(
            f"output=sft needs conversations: use generator=instruct (got generator={generator.name})"
        )
    for key in ("pack_seq_len", "max_shard_bytes"):
        value = output.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"output.{key}={value}: give a positive integer or null")
    if output.get("pack_seq_len") and fmt != "pretrain":
        raise ConfigError(
            "output.pack_seq_len: packing is for output=pretrain; set it to null for output=sft"
        )
    bon = cfg.get("best_of_n")
    if bon is not None and int(bon.n_candidates) > 1:
        best_of_n.parse(bon.score)


def prepare(ds, cfg: DictConfig):
    """Best-of-n selection (when ``best_of_n.n_candidates > 1``) and, for ``sft``, the first teacher
    request renamed ``prompt`` -> ``teacher_prompt``; returns a materialized dataset."""
    from pipeline import best_of_n

    ds = ds.materialize()
    bon = cfg.get("best_of_n")
    if bon is not None and int(bon.n_candidates) > 1:
        ds = best_of_n.select(ds, str(bon.score)).materialize()
    if cfg.output.get("format") == "sft" and "prompt" in ds.schema().names:
        ds = ds.map_batches(_rename_prompt, batch_format="numpy").materialize()
    return ds


def _rename_prompt(batch: dict) -> dict:
    """TRL reads a ``prompt`` column as the prompt of a prompt-completion pair: keep the request elsewhere."""
    batch["teacher_prompt"] = batch.pop("prompt")
    return batch


def rows_per_shard(ds, cfg: DictConfig) -> int:
    """``output.rows_per_shard``, or as many average rows as fit in ``output.max_shard_bytes``."""
    max_bytes = cfg.output.get("max_shard_bytes")
    if not max_bytes:
        return int(cfg.output.rows_per_shard)
    rows = max(ds.count(), 1)
    per_row = max(ds.size_bytes() / rows, 1.0)
    return max(1, int(max_bytes // per_row))


def typed_columns(table: pa.Table) -> pa.Table:
    """Replace JSON string columns named in :data:`JSON_COLUMNS` by typed Arrow lists."""
    for name, dtype in JSON_COLUMNS.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        values = [json.loads(v) if v else [] for v in column.to_pylist()]
        index = table.column_names.index(name)
        table = table.set_column(index, pa.field(name, dtype), pa.array(values, type=dtype))
    return table


def after_write(out: Path, cfg: DictConfig, manifest: dict) -> None:
    """Packed token shards (when ``output.pack_seq_len``) and ``README.md``; adds their summary to ``manifest``."""
    from pipeline.card import write_card
    from pipeline.packing import pack_run

    seq_len = cfg.output.get("pack_seq_len")
    if seq_len:
        filters = OmegaConf.to_container(cfg.filters, resolve=True)
        max_bytes = cfg.output.get("max_shard_bytes")
        rows = max(1, max_bytes // (4 * seq_len)) if max_bytes else int(cfg.output.rows_per_shard)
        manifest["packed"] = pack_run(
            out,
            int(seq_len),
            filters["tokenizer"],
            rows,
            filters.get("cache_dir"),
            bool(filters.get("allow_network", False)),
        )
    manifest["card"] = write_card(out, cfg, manifest)
