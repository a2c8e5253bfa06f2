"""What the run report shows, read from an output directory: rows, funnel, bounds, examples, duplicates.

The shards are read once with pyarrow, only the narrow columns (ids, reasons, categories, scores),
in record batches: exact per-reason row and token totals come from every row, and at most
``SAMPLE_ROWS`` rows (a seeded uniform sample) are kept for histograms, correlations and tables.
Texts are read afterwards for the few rows the report shows. Counts the report prints come from
the manifest; the rows only give distributions and examples.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filters.rules.rule_sets import RULE_SETS, rules_of
from filters.rules.thresholds import band_bounds
from pipeline.output.manifest import summarize

SAMPLE_ROWS = 100_000  # rows kept for distributions; above this the report says it shows a sample
CATEGORIES = ("generator", "domain", "format", "audience", "teacher", "style", "kind", "source_file")
LAYER_GROUP = re.compile(r"_g\d+$")  # per-layer-group attention columns: histograms only
ROW_COLUMNS = ("id", "drop_reason", "duplicate_of", "cluster_id", "n_tokens")


@dataclass
class Rows:
    """The narrow columns of every row (or of a sample), and exact totals per drop reason.

    Args:
        table: One row per row read; ``drop_reason`` is "" for kept rows.
        total: Rows in the shards.
        rows_by_reason: Exact rows per drop reason ("" = kept).
        tokens_by_reason: Exact target tokens per drop reason (empty without ``n_tokens``).
    """

    table: pa.Table
    total: int
    rows_by_reason: dict[str, int] = field(default_factory=dict)
    tokens_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return self.table.num_rows < self.total

    def column(self, name: str) -> np.ndarray:
        values = self.table.column(name)
        if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
            return values.to_numpy(zero_copy_only=False).astype(float)
        return np.asarray(values.fill_null("").to_pylist(), dtype=object)

    @property
    def kept(self) -> np.ndarray:
        return self.column("drop_reason") == ""


def shard_files(out: Path) -> list[Path]:
    return sorted((out / "data").glob("*.parquet")) + sorted((out / "rejected").glob("*.parquet"))


def read_rows(out: Path, scores: list[str], sample: int = SAMPLE_ROWS, seed: int = 0) -> Rows:
    """Read ``scores`` and the bookkeeping columns of every shard; keep a uniform sample of ``sample`` rows."""
    files = shard_files(out)
    total = sum(pq.read_metadata(f).num_rows for f in files)
    keep = min(1.0, sample / max(total, 1))
    rng = np.random.default_rng(seed)
    wanted = [*ROW_COLUMNS, *CATEGORIES, *scores]
    parts, rows_by, tokens_by = [], Counter(), Counter()
    for path in files:
        names = pq.read_schema(path).names
        columns = list(dict.fromkeys(c for c in wanted if c in names))
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
            table = pa.Table.from_batches([batch])
            if "drop_reason" not in names:  # data/ shards hold kept rows only
                table = table.append_column("drop_reason", pa.array([""] * table.num_rows, pa.string()))
            reasons = table.column("drop_reason").fill_null("").to_pylist()
            rows_by.update(reasons)
            if "n_tokens" in names:
                tokens = table.column("n_tokens").fill_null(0).to_numpy(zero_copy_only=False)
                for reason, n in zip(reasons, tokens):
                    tokens_by[reason] += int(n)
            if keep < 1.0:
                table = table.filter(pa.array(rng.random(table.num_rows) < keep))
            parts.append(table)
    empty = pa.table({"id": pa.array([], pa.string()), "drop_reason": pa.array([], pa.string())})
    table = pa.concat_tables(parts, promote_options="permissive") if parts else empty
    return Rows(table, total, dict(rows_by), dict(tokens_by))


def funnel(manifest: dict, rows: Rows) -> list[dict]:
    """planned → generated → each drop reason (in stage order) → kept, with rows and target tokens.

    Each step has ``label``, ``rows`` (rows it had, or dropped), ``tokens`` (None when not known),
    ``left`` / ``tokens_left`` (what remains after it) and ``kind`` (start, drop, kept).
    """
    counts = manifest["counts"]
    # Token totals need every row: without rejected/ (output.write_rejected=false) only rows are known.
    complete = all(rows.rows_by_reason.get(r) == n for r, n in manifest.get("dropped_by_reason", {}).items())
    tokens = rows.tokens_by_reason if rows.tokens_by_reason and complete else None
    total_tokens = sum(tokens.values()) if tokens else None
    steps = []
    left, tokens_left = counts["rows_in"], total_tokens
    if "planned" in counts:
        steps.append(_step("planned", counts["planned"], None, counts["planned"], None, "start"))
        errors = counts.get("teacher_errors", 0)
        if errors:
            left -= errors
            steps.append(_step("teacher errors", errors, None, left, None, "drop"))
        reused = counts.get("reused")
        label = f"generated ({reused} reused from checkpoints)" if reused else "generated"
        steps.append(_step(label, left, total_tokens, left, tokens_left, "start"))
    else:
        steps.append(_step("rows in", left, total_tokens, left, tokens_left, "start"))
    for stage in manifest.get("stages", []):
        for reason, n in stage["dropped"].items():
            if reason == "teacher_error" and "planned" in counts:
                continue
            dropped_tokens = tokens.get(reason, 0) if tokens else None
            left -= n
            tokens_left = tokens_left - dropped_tokens if tokens else None
            steps.append(_step(f"{reason} ({stage['name']})", n, dropped_tokens, left, tokens_left, "drop"))
    kept_tokens = manifest.get("tokens", {}).get("kept_target_tokens") if tokens else None
    steps.append(_step("kept", counts["kept"], kept_tokens, counts["kept"], kept_tokens, "kept"))
    return steps


def _step(label, rows, tokens, left, tokens_left, kind) -> dict:
    return {
        "label": label,
        "rows": rows,
        "tokens": tokens,
        "left": left,
        "tokens_left": tokens_left,
        "kind": kind,
    }


def score_columns(manifest: dict, rows: Rows) -> list[str]:
    """The manifest's scores (its order) that the shards hold with at least one value."""
    names = set(rows.table.column_names)
    out = []
    for name in [*manifest.get("scores", {}), "completion_tokens"]:
        if name in names and name not in out and np.isfinite(rows.column(name)).any():
            out.append(name)
    return out


def bounds(config: dict, manifest: dict, rows: Rows) -> dict[str, list[dict]]:
    """Every line the filters drew on a score: ``{column: [{label, side, value}]}``.

    Absolute bounds come from the config (``filters.thresholds``, the sanity rule's limit and the rule
    sets' bounds, published or overridden); a
    quantile band's bounds are recomputed as the run computed them, over the rows still kept when
    the band stage ran (kept rows and rows that a later stage dropped).
    """
    filters = config.get("filters") or {}
    lines: dict[str, list[dict]] = {}

    def add(column, label, side, value):
        if value is not None:
            lines.setdefault(column, []).append({"label": label, "side": side, "value": float(value)})

    ran = {s["name"] for s in manifest.get("stages", [])}
    if "sanity" in ran:
        add("n_words", "min_words", "min", filters.get("min_words"))
    for name in filters.get("rule_sets") or []:
        if name in ran and name in RULE_SETS:
            for rule in rules_of(name, (filters.get("rule_thresholds") or {}).get(name)):
                add(rule.column, f"{name}.{rule.reason}", rule.side, rule.bound)
    for column, bound in (filters.get("thresholds") or {}).items():
        for side in ("min", "max"):
            add(column, f"thresholds.{column}.{side}", side, (bound or {}).get(side))
    bands = filters.get("quantile_bands") or {}
    if bands and "quantile_bands" in ran:
        names = [s["name"] for s in manifest["stages"]]
        later = names[names.index("quantile_bands") :]
        reached = {""} | {r for s in manifest["stages"] if s["name"] in later for r in s["dropped"]}
        mask = np.isin(rows.column("drop_reason"), list(reached))
        for column, band in bands.items():
            if column not in rows.table.column_names:
                continue
            found = band_bounds(rows.column(column)[mask], tuple(band))
            for side, q in zip(("min", "max"), band):
                add(column, f"quantile_bands q{q:g}", f"band_{side}", (found or {}).get(side))
    return lines


def score_summaries(manifest: dict, rows: Rows, columns: list[str]) -> dict[str, dict]:
    """Per score: the manifest's summary of kept rows, and a summary of the dropped rows read (teacher
    errors left out)."""
    kept = rows.kept
    scored = ~kept & (rows.column("drop_reason") != "teacher_error")  # failed requests have no text
    out = {}
    for column in columns:
        values = rows.column(column)
        kept_summary = manifest.get("scores", {}).get(column) or summarize(values[kept])
        out[column] = {"kept": kept_summary, "dropped": summarize(values[scored])}
    return out


def correlations(rows: Rows, columns: list[str]) -> tuple[list[str], np.ndarray]:
    """Spearman rank correlations between the main (not per-layer-group, not constant) scores of kept rows."""
    import pandas as pd

    kept = rows.kept
    frame = pd.DataFrame({c: rows.column(c)[kept] for c in columns if not LAYER_GROUP.search(c)})
    frame = frame.loc[:, frame.nunique(dropna=True) > 1]
    if frame.shape[1] < 2 or len(frame) < 3:
        return [], np.zeros((0, 0))
    return list(frame.columns), frame.corr(method="spearman", min_periods=3).to_numpy()


def breakdowns(rows: Rows, columns: list[str], headline: list[str], limit: int = 30) -> dict[str, list[dict]]:
    """Per category column: rows, kept, kept share and the kept rows' mean of the ``headline`` scores."""
    kept = rows.kept
    tables = {}
    for category in CATEGORIES:
        if category not in rows.table.column_names:
            continue
        values = rows.column(category).astype(str)
        if len(set(values.tolist())) < 2 and category != "generator":
            continue
        counts = Counter(values.tolist())
        table = []
        for value, n in counts.most_common(limit):
            mine = values == value
            entry = {"value": value, "rows": n, "kept": int((mine & kept).sum())}
            entry["share"] = entry["kept"] / n
            entry["means"] = {s: _mean(rows.column(s)[mine & kept]) for s in headline}
            table.append(entry)
        tables[category] = table
    return tables


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None
