"""The dataset card: ``README.md`` beside the shards, in the Hugging Face dataset-card layout.

Its YAML header names the splits' files (``load_dataset(<output dir>)`` reads them) and the
licence; the body says how the data was made: generator, teacher, counts, drop reasons, score
summaries of the kept rows, the schema and the resolved config. Only facts from the manifest and
config go in (no timings), so the same run writes the same card.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from pipeline.output.report import HEADLINE_PNG

# Licences of the teachers litho ships; any other teacher's licence must be checked by the user.
TEACHER_LICENCES = {
    "embedded:smollm2": (
        "apache-2.0",
        "SmolLM2-135M-Instruct (Hugging Face TB) is released under Apache-2.0, "
        "which places no restriction on the use of its outputs.",
    ),
}
SUMMARY_KEYS = ("mean", "p10", "p50", "p90")


def _configs(out: Path) -> str:
    lines = ["configs:", "- config_name: default", "  default: true", "  data_files:"]
    for split in ("train", "validation"):
        if any((out / "data").glob(f"{split}-*.parquet")):
            lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    if any((out / "packed").glob("*.parquet")):
        lines += ["- config_name: packed", "  data_files:"]
        for split in ("train", "validation"):
            if any((out / "packed").glob(f"{split}-*.parquet")):
                lines += [f"  - split: {split}", f"    path: packed/{split}-*.parquet"]
    return "\n".join(lines)


def _schema(out: Path) -> list[str]:
    shards = sorted((out / "data").glob("*.parquet"))
    if not shards:
        return ["(no kept rows)"]
    schema = pq.read_schema(shards[0])
    return ["| column | type |", "|---|---|"] + [f"| `{f.name}` | `{f.type}` |" for f in schema]


def render(out: Path, cfg: DictConfig, manifest: dict) -> str:
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True) if "teacher" in cfg else {}
    model = str(teacher.get("model") or teacher.get("name") or teacher.get("_target_", "unknown"))
    if not teacher:  # litho score / litho dedup: nothing was generated
        licence, note = "other", "The rows come from the input corpus and keep its licence."
    else:
        licence, note = TEACHER_LICENCES.get(
            model,
            (
                "other",
                f"The teacher ({model}) has its own licence and terms; "
                "check them before publishing or training on this data.",
            ),
        )
    generator = cfg.generator.get("_target_", "?") if "generator" in cfg else manifest.get("source", "?")
    counts = manifest["counts"]
    fmt = cfg.output.get("format", "pretrain")
    lines = [
        "---",
        f"license: {licence}",
        "tags:",
        "- synthetic",
        "- litho",
        _configs(out),
        "---",
        "",
        f"# Synthetic {fmt} dataset made with litho {manifest.get('litho_version', '')}",
        "",
        "## How it was made",
        "",
        f"- generator: `{generator}` (docs/generators.md of litho)",
        f"- teacher: `{model}`, sampling `{teacher.get('sampling', {})}`",
        f"- requests planned: {counts.get('planned', counts.get('rows_in'))}; seed {cfg.get('seed', '')}",
        f"- format: `{fmt}` (docs/formats.md of litho); kept rows in `data/`, dropped rows with their "
        "`drop_reason` in `rejected/`",
    ]
    bon = cfg.get("best_of_n")
    if bon is not None and int(bon.n_candidates) > 1:
        lines.append(f"- best of {bon.n_candidates} candidates per request by `{bon.score}`")
    if manifest.get("packed"):
        p = manifest["packed"]
        lines.append(
            f"- packed: rows of {p['seq_len']} tokens of `{p['tokenizer']}` in `packed/`, EOS id "
            f"{p['eos_id']} after every document"
        )
    if manifest.get("tokenized"):
        t = manifest["tokenized"]
        eos = f"EOS id {t['eos_id']} after every document" if t["append_eos"] else "no EOS added"
        sizes = ", ".join(
            f"{s}: {v['documents']} documents, {v['tokens']} tokens" for s, v in t["splits"].items()
        )
        formats = ", ".join(f"`{f}` ({t['dtype'][f]})" for f in t["formats"])
        lines.append(
            f"- token files in `tokenized/`: {formats} of "
            f"`{t['tokenizer']}`, one document per kept row, {eos} ({sizes}); how to point Megatron-LM, "
            "nanotron and OLMo at them: docs/formats.md of litho"
        )
    lines += [
        "",
        "## Report",
        "",
        "[report.html](report.html) (open it in a browser; it needs no network): the funnel below, score "
        "histograms of kept and dropped rows with the filters' bounds, correlations, per-domain tables, "
        "example texts, the teacher's throughput and near-duplicate clusters.",
        "",
        f"![rows through the pipeline]({HEADLINE_PNG})",
    ]
    lines += ["", "## Counts", "", "| | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    lines += [f"| dropped: {k} | {v} |" for k, v in manifest.get("dropped_by_reason", {}).items()]
    lines += [f"| kept target tokens | {manifest.get('tokens', {}).get('kept_target_tokens', 0)} |"]
    scores = {k: v for k, v in manifest.get("scores", {}).items() if v.get("count")}
    if scores:
        lines += [
            "",
            "## Scores of the kept rows",
            "",
            "| score | " + " | ".join(SUMMARY_KEYS) + " |",
            "|---|" + "---|" * len(SUMMARY_KEYS),
        ]
        lines += [
            f"| `{k}` | " + " | ".join(f"{v[s]:.4g}" for s in SUMMARY_KEYS) + " |" for k, v in scores.items()
        ]
    lines += [
        "",
        "## Schema (`data/`)",
        "",
        *_schema(out),
        "",
        "## Licence",
        "",
        note,
        "Seed texts used by rephrase, dense, instruct or layered runs keep their own licences.",
        "",
        "## Config",
        "",
        "```yaml",
        OmegaConf.to_yaml(cfg, resolve=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(out: Path, cfg: DictConfig, manifest: dict) -> str:
    """Write ``out/README.md`` atomically; return its name."""
    path = out / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(render(out, cfg, manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path.name
