"""Reading existing corpora (Parquet or JSONL) for `litho score` and `litho dedup`."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import xxhash

from generators.errors import ConfigError
from generators.text import jsonl_records

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


def input_columns(spec: str, text_column: str, id_column: str | None) -> tuple[list[str], list[str]]:
    """Column names of the input (from the first file) and its numeric ones, checked in every file.

    Parquet schemas come from the files' footers; a JSONL file's columns from its first record.

    Raises:
        ConfigError: no input files, or a file without ``text_column`` / ``id_column``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, kind = input_files(spec)
    first: tuple[list[str], list[str]] | None = None
    for path in files:
        if kind == "parquet":
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ConfigError(f"input={spec}: {path} is not a readable Parquet file ({exc})") from None
            names = schema.names
            numeric = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        else:
            record = _first_record(path)
            if record is None:
                continue  # an empty file: no rows, no columns to check
            _check_json(path)
            names = list(record)
            numeric = [k for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        if text_column not in names:
            raise ConfigError(f"text_column={text_column}: no such column in {path}; it has {sorted(names)}")
        if id_column and id_column not in names:
            raise ConfigError(f"id_column={id_column}: no such column in {path}; it has {sorted(names)}")
        first = first or (names, numeric)
    if first is None:
        raise ConfigError(f"input={spec}: every file is empty; point it at files with rows")
    return first


def _first_record(path: str) -> dict | None:
    """The first JSON object of a JSONL file (None for a file without one)."""
    import json

    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"input: {path} line {number} is not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"input: {path} line {number} is not a JSON object")
                return record
    return None


def _read_file(batch: dict, kind: str, text_column: str, id_column: str | None):
    """Yield one file's rows a record batch at a time, with ``source_file``, ``source_row`` and ``id``."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    for path in batch["path"]:
        if kind == "parquet":
            batches = _parquet_batches(path, pq)
        elif Path(path).stat().st_size == 0:
            continue  # an empty JSONL file holds no rows
        else:
            batches = _json_table(path, pajson).to_batches(max_chunksize=4096)
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
            # A null text is kept, empty, with its reason: never scored as the string "None".
            null = np.asarray([t is None for t in out[text_column]], dtype=bool)
            if null.any():
                out[text_column] = np.where(null, "", out[text_column]).astype(object)
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
            out["drop_reason"] = np.where(null, "null_text", "").astype(object)
            yield out


def _check_json(path: str) -> None:
    """Parse a whole JSONL file once, streaming, before Ray starts: a bad line is a one-line error
    naming the file and line now, not a task failure later.

    Raises:
        ConfigError: the first line that is not UTF-8, not JSON or not an object.
    """
    import pyarrow as pa
    import pyarrow.json as pajson

    try:
        for batch in pajson.open_json(path):
            batch.validate(full=True)  # pyarrow's JSON reader does not check the bytes of strings
    except pa.ArrowInvalid:
        problem = _bad_line(path)
        if problem:  # else only the streaming reader's fixed schema disliked a later record: fine
            raise ConfigError(problem) from None


def _parquet_batches(path: str, pq):
    """A Parquet file's record batches; a damaged page is an error naming the file, not a traceback."""
    import pyarrow as pa

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=4096)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(
            f"input: {path} is not a readable Parquet file ({exc}); rewrite or remove it"
        ) from None


def _json_table(path: str, pajson):
    """A JSONL file as a table, every string valid UTF-8.

    Raises:
        ConfigError: naming the file and the first line that is not UTF-8, not JSON or not an object.
    """
    import pyarrow as pa

    try:
        table = pajson.read_json(path)
        table.validate(full=True)  # pyarrow's JSON reader does not check the bytes of strings
    except pa.ArrowInvalid as exc:
        raise ConfigError(_bad_line(path) or f"input: {path} is not readable JSONL ({exc})") from None
    return table


def _bad_line(path: str) -> str | None:
    """What is wrong with the first bad line of a JSONL file, as one line; None if no line is bad."""
    try:
        jsonl_records(path, "input")
    except ConfigError as exc:
        return str(exc)
    return None


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
        # The scorer actors of the same pass hold their CPUs for the whole pass; a read task asking for a
        # whole CPU would never be scheduled beside them on 2 cores (the run would wait forever).
        num_cpus=0.25,
    )
