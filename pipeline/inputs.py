"""Reading existing corpora (Parquet or JSONL) for `litho score` and `litho dedup`."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import xxhash

from generators.errors import ConfigError

SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json"}


def input_files(spec: str) -> tuple[list[str], str]:
    """Expand a file, directory or glob into sorted files of one format.

    Raises:
        ConfigError: nothing readable matches, or Parquet and JSONL are mixed.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        candidates = sorted(
            str(p) for p in path.rglob("*") if p.suffix in SUFFIXES and not p.name.startswith(".")
        )
    else:
        candidates = sorted(glob.glob(str(path)))
    files = [f for f in candidates if Path(f).suffix in SUFFIXES and Path(f).is_file()]
    if not files:
        raise ConfigError(
            f"input={spec}: no .parquet or .jsonl files there; give a file, a directory or a glob"
        )
    kinds = {SUFFIXES[Path(f).suffix] for f in files}
    if len(kinds) > 1:
        raise ConfigError(f"input={spec}: mixes Parquet and JSONL files; point it at one kind")
    return files, kinds.pop()


def _read_file(batch: dict, kind: str, text_column: str, id_column: str | None):
    """Yield one file's rows a record batch at a time, with ``source_file``, ``source_row`` and ``id``."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    for path in batch["path"]:
        if kind == "parquet":
            batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        else:
            batches = pajson.read_json(path).to_batches(max_chunksize=4096)
        row = 0
        for record_batch in batches:
            out = {
                name: record_batch.column(name).to_numpy(zero_copy_only=False)
                for name in record_batch.schema.names
            }
            if text_column not in out:
                raise ConfigError(
                    f"text_column={text_column}: no such column in {path}; it has {sorted(out)}"
                )
            if id_column and id_column not in out:
                raise ConfigError(f"id_column={id_column}: no such column in {path}; it has {sorted(out)}")
            n = record_batch.num_rows
            rows = np.arange(row, row + n)
            row += n
            out["source_file"] = np.full(n, path, dtype=object)
            out["source_row"] = rows
            if id_column:
                out["id"] = np.asarray([str(i) for i in out[id_column]], dtype=object)
            elif "id" not in out:
                # (file, row) ids: unique even for repeated texts, and stable across reruns.
                out["id"] = np.asarray(
                    [xxhash.xxh3_64_hexdigest(f"{path}:{r}".encode()) for r in rows], dtype=object
                )
            out["drop_reason"] = np.full(n, "", dtype=object)
            yield out


def read_corpus(spec: str, text_column: str, id_column: str | None):
    """A Ray dataset of the input rows, every column kept, plus ``id``, ``source_file``, ``source_row``
    and an empty ``drop_reason``. One read task per file, so row numbers are exact."""
    import ray

    files, kind = input_files(spec)
    return ray.data.from_items([{"path": f} for f in files]).map_batches(
        _read_file,
        fn_kwargs={"kind": kind, "text_column": text_column, "id_column": id_column},
        batch_size=1,
        batch_format="numpy",
    )
