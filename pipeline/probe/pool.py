"""The probe's inputs: the pool's rows and scores, the evaluation sets, and what keeps them apart.

A pool is a litho output directory (``data/``, and ``rejected/`` with ``pool_rows: all``), a corpus
scored by ``litho score`` (the same layout), or Parquet/JSONL files with a text column and score
columns. ``pool: builtin`` is real text from this machine (pipeline/probe/corpus.py) scored once
by ``litho score`` and cached. Evaluation sets are held-out real text (``pydoc``, ``man``, ``doc``)
and any Parquet/JSONL a user names; a pool row that shares a word n-gram with an evaluation set is
dropped, so no arm trains on evaluation text.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from filters.rules.thresholds import ThresholdFilter, band_bounds, check_bands, check_bounds
from generators.errors import ConfigError
from generators.text import normalized_words
from pipeline.inputs import input_files
from pipeline.probe import corpus

log = logging.getLogger(__name__)
GROUP_COLUMNS = ("domain", "source", "generator")  # ``group_column: auto`` takes the first present
POOL_COLUMN = "pool"  # the group of a row of several named pools: its pool's name


@dataclass
class Pool:
    """Pool rows: texts, numeric columns (float, NaN for missing), drop reasons and a group label."""

    texts: list[str]
    columns: dict[str, np.ndarray]
    drop_reason: np.ndarray
    groups: np.ndarray | None = None
    group_column: str | None = None
    files: list[str] = field(default_factory=list)

    def subset(self, mask: np.ndarray) -> Pool:
        idx = np.flatnonzero(mask)
        return Pool(
            [self.texts[i] for i in idx],
            {c: v[idx] for c, v in self.columns.items()},
            self.drop_reason[idx],
            None if self.groups is None else self.groups[idx],
            self.group_column,
            self.files,
        )


def concat(pools: dict[str, Pool]) -> Pool:
    """Several named pools as one, each row's group its pool's name; a score column one pool lacks is
    NaN in its rows."""
    names = sorted({c for p in pools.values() for c in p.columns})
    columns = {
        c: np.concatenate([p.columns.get(c, np.full(len(p.texts), np.nan)) for p in pools.values()])
        for c in names
    }
    return Pool(
        [t for p in pools.values() for t in p.texts],
        columns,
        np.concatenate([p.drop_reason for p in pools.values()]),
        np.asarray([n for n, p in pools.items() for _ in p.texts], dtype=object),
        POOL_COLUMN,
        [f for p in pools.values() for f in p.files],
    )


def pool_files(spec: str, rows: str = "kept") -> list[str]:
    """The files of a pool: ``data/`` (plus ``rejected/`` for ``rows=all``) of a litho output directory,
    else every Parquet/JSONL file ``spec`` names.

    Raises:
        ConfigError: nothing readable there, or an unknown ``pool_rows``.
    """
    if rows not in ("kept", "all"):
        raise ConfigError(f"pool_rows={rows}: use kept (data/ only) or all (data/ and rejected/)")
    path = Path(spec).expanduser()
    if (path / "data").is_dir():
        files = sorted(str(p) for p in (path / "data").glob("*.parquet"))
        if rows == "all" and (path / "rejected").is_dir():
            files += sorted(str(p) for p in (path / "rejected").glob("*.parquet"))
        if not files:
            raise ConfigError(
                f"pool={spec}: {path / 'data'} holds no Parquet shards; run litho score or generate first"
            )
        return files
    if not path.exists() and "*" not in spec:
        raise ConfigError(
            f"pool={spec}: no such file or directory; give a litho output dir, a corpus scored with "
            "litho score, or pool=builtin"
        )
    files, _ = input_files(spec)
    return files


def read_table(files: list[str], columns: list[str] | None = None):
    """One Arrow table of Parquet or JSONL files (columns missing from a file come back null)."""
    import pyarrow as pa
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        if f.endswith(".parquet"):
            names = pq.read_schema(f).names
            tables.append(pq.read_table(f, columns=[c for c in columns if c in names] if columns else None))
        else:
            table = pajson.read_json(f)
            tables.append(table.select([c for c in columns if c in table.column_names]) if columns else table)
    return pa.concat_tables(tables, promote_options="permissive")


def read_pool(files: list[str], text_column: str, group_column: str | None = "auto") -> Pool:
    """The pool's texts, numeric columns, drop reasons and group labels.

    Raises:
        ConfigError: no ``text_column``, or a ``group_column`` the pool lacks.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if files[0].endswith(".parquet"):
        schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    else:
        schema = read_table(files[:1]).schema
    names = schema.names
    if text_column not in names:
        raise ConfigError(
            f"text_column={text_column}: no such column in the pool ({files[0]}); it has {sorted(names)}"
        )
    numeric = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    if group_column == "auto":
        group_column = next((c for c in GROUP_COLUMNS if c in names), None)
    elif group_column and group_column not in names:
        raise ConfigError(f"group_column={group_column}: no such column in the pool; it has {sorted(names)}")
    wanted = [text_column, *numeric, *[c for c in ("drop_reason", group_column) if c and c in names]]
    table = read_table(files, list(dict.fromkeys(wanted)))
    texts = [t or "" for t in table.column(text_column).to_pylist()]
    columns = {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=float) for c in numeric}
    reasons = (
        np.asarray([r or "" for r in table.column("drop_reason").to_pylist()], dtype=object)
        if "drop_reason" in table.column_names
        else np.full(len(texts), "", dtype=object)
    )
    groups = (
        np.asarray([str(g) for g in table.column(group_column).to_pylist()], dtype=object)
        if group_column
        else None
    )
    return Pool(texts, columns, reasons, groups, group_column, files)


def filters_mask(pool: Pool, thresholds: dict | None, bands: dict | None) -> np.ndarray:
    """Rows the configured filters keep: no ``drop_reason``, inside ``filters.thresholds`` and inside
    ``filters.quantile_bands`` (quantiles of the rows still kept, as ``litho score`` computes them).

    Raises:
        ConfigError: a threshold or band on a column the pool lacks.
    """
    bounds = check_bounds(thresholds)
    bands = check_bands(bands)
    for key, names in (("filters.thresholds", bounds), ("filters.quantile_bands", bands)):
        for column in names:
            if column not in pool.columns:
                raise ConfigError(
                    f"{key}.{column}: no such score column in the pool; it has {sorted(pool.columns)}"
                )
    batch = {"drop_reason": pool.drop_reason.copy(), **pool.columns}
    if bounds:
        batch = ThresholdFilter(bounds)(batch)
    kept = batch["drop_reason"] == ""
    band_limits = {c: band_bounds(pool.columns[c][kept], band) for c, band in bands.items()}
    band_limits = {c: b for c, b in band_limits.items() if b}
    if band_limits:
        batch = ThresholdFilter(band_limits, name="quantile_bands")(batch)
    return np.asarray(batch["drop_reason"] == "", dtype=bool)


def builtin_eval(name: str, max_chars: int) -> list[str]:
    """A built-in evaluation set: held-out passages of ``pydoc``, ``man`` or ``doc`` (empty when the
    machine has none, e.g. no man pages)."""
    return [d["text"] for d in corpus.documents(name, "eval", max_chars)]


def eval_sets(builtin: list[str], files: dict, text_column: str, max_chars: int) -> dict[str, list[str]]:
    """Every evaluation set by name, each capped at ``max_chars``.

    Raises:
        ConfigError: an unknown built-in name, an unreadable file, or no set with any text.
    """
    sets: dict[str, list[str]] = {}
    for name in builtin or []:
        if name not in corpus.SOURCES:
            raise ConfigError(f"eval.builtin: unknown set {name!r}; use some of {list(corpus.SOURCES)}")
        texts = builtin_eval(name, max_chars)
        if texts:
            sets[name] = texts
        else:
            log.warning("eval set %s: no text on this machine; skipped", name)
    for name, spec in (files or {}).items():
        table = read_table(input_files(str(spec))[0])
        if text_column not in table.column_names:
            raise ConfigError(f"eval.files.{name}={spec}: no column {text_column!r} (eval.text_column)")
        texts, total = [], 0
        for text in table.column(text_column).to_pylist():
            if text and total < max_chars:
                texts.append(text)
                total += len(text)
        sets[str(name)] = texts
    if not any(sets.values()):
        raise ConfigError(
            "eval: no evaluation text; add eval.builtin=[pydoc] or eval.files={name: file.jsonl}"
        )
    return sets


def ngrams(text: str, n: int) -> set[int]:
    words = normalized_words(text)
    return {hash(tuple(words[i : i + n])) for i in range(max(0, len(words) - n + 1))}


def contaminated(texts: list[str], evals: dict[str, list[str]], n: int) -> np.ndarray:
    """Per pool text: does it share a word ``n``-gram with any evaluation text? (The usual
    train/test overlap check, e.g. GPT-3's 13-gram decontamination; ``n=0`` turns it off.)"""
    if not n:
        return np.zeros(len(texts), dtype=bool)
    seen: set[int] = set()
    for group in evals.values():
        for text in group:
            seen |= ngrams(text, n)
    return np.asarray([not seen.isdisjoint(ngrams(t, n)) for t in texts], dtype=bool)


def builtin_pool(cache_dir: str, sources: list[str], max_chars: int, lm: bool, tokenizer: str) -> Path:
    """The built-in pool (real text of this machine, pool side) scored by ``litho score``, cached by
    its settings under ``cache_dir``; returns the scored directory."""
    import xxhash

    settings = {"sources": list(sources), "max_chars": int(max_chars), "lm": bool(lm), "tokenizer": tokenizer}
    settings["corpus_version"] = corpus.VERSION
    tag = xxhash.xxh3_64_hexdigest(json.dumps(settings, sort_keys=True).encode())
    root = Path(cache_dir).expanduser() / "probe" / f"builtin-{tag}"
    scored = root / "scored"
    if (scored / "manifest.json").is_file():
        log.info("builtin pool: reusing %s", scored)
        return scored
    unknown = sorted(set(sources) - set(corpus.SOURCES))
    if unknown:
        raise ConfigError(f"builtin.sources: unknown {unknown}; use some of {list(corpus.SOURCES)}")
    rows = corpus.pool_rows(list(sources), int(max_chars))
    corpus.write_jsonl(rows, root / "input.jsonl")
    log.info("builtin pool: %d passages from %s; scoring with litho score (lm=%s)", len(rows), sources, lm)
    from pipeline.run import run

    overrides = [
        f"input={root / 'input.jsonl'}",
        f"output.dir={scored}",
        f"filters.tokenizer={tokenizer}",
        "id_column=key",
    ]
    if not lm:
        overrides.append("filters.lm=null")
    run(_compose("score", overrides), "score")
    return scored


def _compose(config_name: str, overrides: list[str]):
    """Compose another command's config, inside the running Hydra app or outside one (tests)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name=config_name, overrides=overrides)
