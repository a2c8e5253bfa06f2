"""``litho export SOURCE token_formats=[megatron] filters.tokenizer=...``: token files for data that exists.

``SOURCE`` is a finished litho output (its ``data/`` shards; the files go to its ``tokenized/`` and its
manifest and card list them) or any Parquet/JSONL corpus (a file, a directory or a glob; the files go
to ``output.dir``, one shard per input file in sorted order, rows in file order). Nothing is generated
or scored again: a litho output whose run used the same tokenizer gives the ids it stored
(``.litho/tokens``); another tokenizer, or a corpus, is tokenized by the tasks that write the files.
The same code writes them as a run does (pipeline/output/tokenized.py), staged and swapped in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import xxhash
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError

log = logging.getLogger(__name__)


def _litho_output(path: Path) -> dict | None:
    from pipeline.output.snapshot import read_json

    manifest = read_json(path / "manifest.json") if path.is_dir() else None
    return manifest if manifest is not None and (path / "data").is_dir() else None


def plan(cfg: DictConfig, tokenizer_given: bool) -> tuple[Path, list[dict], dict, dict | None]:
    """``(output dir, sources, settings, the source run's manifest)``, every check done before Ray.

    Raises:
        ConfigError: no input, a corpus without ``output.dir``, a bad format or tokenizer.
    """
    from pipeline.inputs import input_files
    from pipeline.output.tokenized import check_formats, run_sources, token_settings
    from pipeline.validate import writable_dir

    check_formats(cfg.output.get("token_formats"))  # first: a typo costs no file listing
    source = Path(str(cfg.input)).expanduser()
    manifest = _litho_output(source)
    output = OmegaConf.to_container(cfg.output, resolve=True)
    filters = OmegaConf.to_container(cfg.filters, resolve=True)
    if manifest is not None:
        run_cfg = OmegaConf.load(source / "config.yaml") if (source / "config.yaml").is_file() else None
        run_tokenizer = str(run_cfg.filters.tokenizer) if run_cfg is not None else None
        if not tokenizer_given and run_tokenizer:
            filters["tokenizer"] = (
                run_tokenizer  # the run's own target tokenizer, unless another is asked for
            )
        sft = run_cfg is not None and run_cfg.output.get("format") == "sft"
        settings = token_settings(output, filters, sft=sft)
        out = writable_dir(str(output["dir"]), "output.dir") if output.get("dir") else source.resolve()
        sources = run_sources(source.resolve(), manifest.get("shards", []), str(cfg.text_column))
        if run_tokenizer != settings["tokenizer"]:
            sources = [{**s, "tokens": None} for s in sources]  # stored ids are the run tokenizer's
        return out, sources, settings, manifest
    files, _ = input_files(str(cfg.input))
    if not output.get("dir"):
        raise ConfigError(f"output.dir=null: input={cfg.input} is a corpus, not a litho output; say where the token files go, e.g. output.dir=/data/tokens")  # fmt: skip
    settings = token_settings(output, filters)
    out = writable_dir(str(output["dir"]), "output.dir")
    sources = []
    for i, path in enumerate(files):
        stat = Path(path).stat()
        digest = xxhash.xxh3_64_hexdigest(
            f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        )
        sources.append({"name": f"train-{i:05d}-of-{len(files):05d}", "split": "train", "path": path, "tokens": None,
                        "digest": digest, "source": path, "text_column": str(cfg.text_column)})  # fmt: skip
    return out, sources, settings, None


def export(cfg: DictConfig, tokenizer_given: bool = True) -> dict:
    """Write the token files; return the ``tokenized`` section written into the output's manifest."""
    from pipeline.cluster import connect
    from pipeline.output.card import write_card
    from pipeline.output.snapshot import read_json, write_json
    from pipeline.output.tokenized import write_token_files

    out, sources, settings, manifest = plan(cfg, tokenizer_given)
    current = read_json(out / "manifest.json") or {}
    with connect(OmegaConf.to_container(cfg.cluster, resolve=True)):
        section = write_token_files(out, sources, settings, current.get("tokenized"))
    if manifest is not None and out == Path(str(cfg.input)).expanduser().resolve():
        manifest["tokenized"] = section
        write_json(out / "manifest.json", manifest)
        if (out / "config.yaml").is_file():  # the card lists the token files too
            manifest["card"] = write_card(out, OmegaConf.load(out / "config.yaml"), manifest)
            write_json(out / "manifest.json", manifest)
    else:
        write_json(out / "manifest.json", {"source": str(cfg.input), "tokenized": section})
    return section


def summary(section: dict, out: Path) -> str:
    lines = [f"{'split':<14}{'shards':>8}{'documents':>12}{'tokens':>14}"]
    for split, s in section["splits"].items():
        lines.append(f"{split:<14}{s['shards']:>8}{s['documents']:>12}{s['tokens']:>14}")
    note = " (unchanged: published files kept)" if section["unchanged"] else ""
    lines.append(f"token files: {out / section['folder']} ({', '.join(section['formats'])}){note}")
    return "\n".join(lines)
