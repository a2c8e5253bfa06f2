"""``report.html`` beside the shards: what the filters did, in one static file a browser opens offline.

:func:`write_report` runs at the end of every ``litho generate|score|dedup`` (after the card), and
``litho report OUT_DIR`` builds it again for an existing output. Everything comes from the output
directory: ``manifest.json`` (counts, drops by stage and reason, timings), ``config.yaml`` (the
bounds the filters used), the shards (score distributions and examples; see
:mod:`pipeline.output.report_data`), the generation checkpoints (teacher throughput; see
:mod:`pipeline.output.report_teacher`) and, when a probe was run, ``probe/probe.json`` and
``probe/*.png``. Figures are SVG (:mod:`pipeline.output.report_plots`) inlined as data URIs and
texts are escaped by Jinja2's autoescape, so the file needs no network and no server. The funnel
is also written as ``report-funnel.png``, the headline plot the dataset card embeds.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.output import report_data as data
from pipeline.output import report_examples as ex
from pipeline.output import report_plots as plots
from pipeline.output.report_teacher import phases, teacher_batches

log = logging.getLogger(__name__)

REPORT, HEADLINE_PNG = "report.html", "report-funnel.png"
# Scores a breakdown table averages, those present in this order (at most five).
HEADLINE_SCORES = (
    "n_tokens",
    "chars_per_token",
    "fertility",
    "bits_per_byte_v1",
    "attn_density_v1",
    "rep_dup_ngram_frac_5",
    "gzip_ratio",
)
MAX_TEXT = 4000  # characters of an example text shown; the rest is cut with a note


def load(out: Path) -> tuple[dict, dict]:
    """The manifest and the resolved config of an output directory."""
    manifest = json.loads((out / "manifest.json").read_text())
    path = out / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {}
    return manifest, config


def build(out: Path, manifest: dict, config: dict) -> tuple[str, bytes]:
    """The report's HTML and the headline (funnel) PNG for an output directory."""
    rows = data.read_rows(out, list(manifest.get("scores", {})) + ["completion_tokens"])
    scores = data.score_columns(manifest, rows)
    steps = data.funnel(manifest, rows)
    funnel_fig = plots.funnel(steps)
    headline = plots.png_bytes(funnel_fig)
    context = {
        "out": str(out),
        "manifest": manifest,
        "config_yaml": OmegaConf.to_yaml(OmegaConf.create(config)) if config else "",
        "about": _about(manifest, config),
        "rows": rows,
        "funnel": {"steps": steps, "plot": plots.svg_uri(funnel_fig)},
        "scores": _scores(manifest, config, rows, scores),
        "probe": _probe(out, config),
    }
    names, matrix = data.correlations(rows, scores)
    if names:
        context["correlations"] = {
            "names": names,
            "matrix": matrix,
            "plot": plots.svg_uri(plots.heatmap(names, matrix)),
        }
    headline_scores = [s for s in HEADLINE_SCORES if s in scores][:5] or [
        s for s in scores if not data.LAYER_GROUP.search(s)
    ][:5]
    context["breakdowns"] = {
        "scores": headline_scores,
        "tables": data.breakdowns(rows, scores, headline_scores),
    }
    context["throughput"] = teacher_batches(out, config, manifest)
    if context["throughput"] and context["throughput"]["summary"].get("span_s"):
        context["throughput"]["plot"] = plots.svg_uri(plots.throughput(context["throughput"]["batches"]))
    wall, stage_seconds = phases(manifest)
    context["timings"] = {
        "wall": wall,
        "stages": stage_seconds,
        "plot": plots.svg_uri(plots.timings(wall, stage_seconds)),
    }
    duplicates = ex.duplicates(rows, manifest)
    context["examples"], context["duplicates"] = _examples(out, config, rows, scores, duplicates)
    return _render(context), headline


def _about(manifest: dict, config: dict) -> list[tuple[str, str]]:
    teacher = config.get("teacher") or {}
    about = [("output", manifest.get("output_dir", "")), ("litho", manifest.get("litho_version", ""))]
    if teacher:
        about += [("teacher", str(teacher.get("model") or teacher.get("name") or teacher.get("_target_")))]
        about += [("generator", str((config.get("generator") or {}).get("_target_", "")).rsplit(".", 1)[-1])]
        about += [("n, seed", f"{config.get('n')}, {config.get('seed')}")]
        usage = manifest.get("teacher_usage")
        if usage:  # this run's teacher calls
            tokens = f"{usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion"
            about += [("teacher tokens (this run)", f"{tokens} for {usage['rows']:,} rows")]
            if "cost_usd" in usage:
                price = usage["price_per_million"]
                about += [("teacher cost (estimated)", f"${usage['cost_usd']:,.4f} at ${price['prompt']} / "
                           f"${price['completion']} per million prompt / completion tokens")]  # fmt: skip
    elif config.get("input"):
        about += [("input", str(config["input"]))]
    about += [("total time", f"{manifest.get('timings_s', {}).get('total_s', '?')} s")]
    return about


def _scores(manifest: dict, config: dict, rows: data.Rows, columns: list[str]) -> list[dict]:
    lines = data.bounds(config, manifest, rows)
    summaries = data.score_summaries(manifest, rows, columns)
    kept = rows.kept
    scored = ~kept & (rows.column("drop_reason") != "teacher_error")  # failed requests have no text to score
    out = []
    for column in columns:
        values = rows.column(column)
        out.append(
            {
                "name": column,
                "group": bool(data.LAYER_GROUP.search(column)),
                "plot": plots.histogram(column, values[kept], values[scored], lines.get(column, [])),
                "lines": lines.get(column, []),
                **summaries[column],
            }
        )
    return out


def _examples(out: Path, config: dict, rows: data.Rows, scores: list[str], duplicates: dict | None):
    """Example rows (extremes of each score, the typical row of each drop reason) and the duplicate
    pairs, with their texts read from the shards in one pass."""
    picks = []
    for column in (c for c in scores if not data.LAYER_GROUP.search(c)):
        found = ex.extremes(rows, column)
        if found and found[0][2] != found[-1][2]:  # a constant score has no extremes worth reading
            picks.append((column, found))
    typical = ex.typical_dropped(rows, scores)
    ids = {i for _, found in picks for _, i, _ in found} | set(typical.values())
    for kind in ("exact", "near"):
        pair = ((duplicates or {}).get(kind) or {}).get("pair")
        if pair:
            ids |= set(pair)
    texts = ex.texts(out, ids, str(config.get("text_column", "text")))
    view = lambda i: _view(texts.get(i, {"id": i, "text": ""}))  # noqa: E731
    examples = {
        "scores": [
            {"name": c, "rows": [dict(view(i), which=w, value=v) for w, i, v in found]} for c, found in picks
        ],
        "dropped": [dict(view(i), reason=r) for r, i in typical.items()],
    }
    if duplicates:
        ngram = int(((config.get("dedup") or {}).get("minhash") or {}).get("ngram", 5))
        for kind in ("exact", "near"):
            entry = duplicates.get(kind)
            if entry and entry.get("pair"):
                a, b = (texts.get(i) for i in entry["pair"])
                entry["views"] = [view(i) for i in entry["pair"]]
                entry["jaccard"] = ex.pair_jaccard(a["text"], b["text"], ngram) if a and b else None
            if entry and entry.get("sizes"):
                title = f"{kind} duplicate clusters"
                entry["plot"] = plots.svg_uri(plots.cluster_sizes(entry["sizes"], title))
    return examples, duplicates


def _view(row: dict) -> dict:
    text = row.get("text") or ""
    cut = len(text) - MAX_TEXT
    meta = " · ".join(str(row[k]) for k in ("domain", "format", "audience", "topic", "style") if row.get(k))
    return {
        "id": str(row.get("id", "")),
        "text": text[:MAX_TEXT],
        "cut": cut if cut > 0 else 0,
        "preview": " ".join(text[:110].split()),
        "meta": meta,
        "error": row.get("error") or "",
        "duplicate_of": row.get("duplicate_of") or "",
    }


def _probe(out: Path, config: dict) -> dict | None:
    """``probe/probe.json`` and ``probe/*.png`` (or the directory ``probe.dir`` names), when present."""
    probe_cfg = config.get("probe") if isinstance(config.get("probe"), dict) else {}
    directory = Path(probe_cfg.get("dir") or out / "probe")
    path = directory / "probe.json"
    if not path.is_file():
        return None
    content = json.loads(path.read_text())
    images = [
        {"name": p.name, "uri": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()}
        for p in sorted(directory.glob("*.png"))
    ]
    return {"tables": _tables("probe", content), "images": images, "path": str(path)}


def _tables(title: str, value) -> list[dict]:
    """Any JSON as tables: a list of objects is one table, an object's scalars are a key/value table,
    and its nested lists and objects become tables of their own."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for v in value for k in v))
        rows = [[_cell(v.get(c)) for c in columns] for v in value]
        return [{"title": title, "columns": columns, "rows": rows}]
    if isinstance(value, dict):
        scalars = [[k, _cell(v)] for k, v in value.items() if not isinstance(v, dict | list)]
        tables = [{"title": title, "columns": ["key", "value"], "rows": scalars}] if scalars else []
        for k, v in value.items():
            if isinstance(v, dict | list):
                tables += _tables(f"{title}.{k}", v)
        return tables
    if isinstance(value, list):
        return [{"title": title, "columns": ["value"], "rows": [[_cell(v)] for v in value]}]
    return [{"title": title, "columns": ["value"], "rows": [[_cell(value)]]}]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _number(value, digits: int = 4) -> str:
    """Integers and values of 1,000 or more with thousands separators, others to ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if abs(value) >= 10 ** max(digits - 1, 3):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    return env.get_template("report.html.j2").render(**context)


def write_report(
    out: Path, manifest: dict | None = None, cfg: DictConfig | dict | None = None, strict: bool = False
) -> str | None:
    """Write ``report.html`` and ``report-funnel.png`` into ``out`` atomically; return the report's name.

    A run calls it with its manifest and config; ``litho report`` with neither (read from ``out``) and
    ``strict``. Otherwise a report that fails is logged and skipped (None): at the end of a run the
    shards and the manifest matter more.
    """
    out = Path(out)
    try:
        if manifest is None or cfg is None:
            saved_manifest, saved_config = load(out)
            manifest = manifest if manifest is not None else saved_manifest
            cfg = cfg if cfg is not None else saved_config
        config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        html, headline = build(out, manifest, config)
    except Exception:
        if strict:
            raise
        log.exception(
            "report: could not build %s/%s; rerun `litho report %s` after fixing the cause", out, REPORT, out
        )
        return None
    for name, content in ((HEADLINE_PNG, headline), (REPORT, html.encode())):
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, out / name)
    return REPORT
