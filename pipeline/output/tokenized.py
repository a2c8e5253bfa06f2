"""The token-file phase: ``output.token_formats`` written from the published shards, one Ray task per shard.

Every kept row is one document: its target-tokenizer ids (no special tokens inside), then the
tokenizer's EOS (``output.append_eos``). The ids are the ones the run already has: ``token_metrics``
keeps them and the shard writer stores them beside each data shard under ``.litho/tokens/``
(pipeline/output/packing.py), so a run tokenizes every text once. A shard without them (``litho
dedup``, ``litho export`` with another tokenizer) is tokenized by its own task, and ``output=sft``
shards are rendered with the tokenizer's chat template (pipeline/output/sft_tokens.py).

The driver sends one task per shard and receives a few numbers and digests from each: nothing per row.
Files are written to a staging folder and swapped in whole (pipeline/output/snapshot.py); the manifest
comes after them. A shard whose source digest and settings equal the published ones is hard-linked
from the published files instead of written again, so a rerun redoes only what changed, and one that
changed nothing leaves ``tokenized/`` untouched.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import xxhash

from generators.errors import ConfigError
from pipeline.output.token_files import FORMATS, ShardWriter, dtypes

log = logging.getLogger(__name__)
TOKENIZED = "tokenized"
INT32_MAX = 2**31 - 1


def check_formats(formats) -> list[str]:
    """``output.token_formats`` as a list of known names (cheap: no tokenizer is loaded)."""
    if formats is None:
        return []
    if isinstance(formats, str):
        formats = [formats]
    formats = [str(f) for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(
            f"output.token_formats={formats}: unknown format {unknown[0]!r}; use any of {list(FORMATS)}, "
            "e.g. output.token_formats=[megatron]"
        )
    return list(dict.fromkeys(formats))


def token_settings(output: dict, filters: dict, sft: bool = False) -> dict:
    """The phase's settings, with the tokenizer loaded once in the driver to check it fits the formats.

    Raises:
        ConfigError: an unknown format, a vocabulary beyond int32, or ``output.append_eos`` with a
            tokenizer that has no EOS token.
    """
    from filters.tokenizers import load_target_tokenizer

    formats = check_formats(output.get("token_formats"))
    spec = filters.get("tokenizer")
    if not spec:
        raise ConfigError(
            "filters.tokenizer=null: token files need a target tokenizer; set filters.tokenizer"
        )
    tokenizer = load_target_tokenizer(str(spec), "filters.tokenizer", bool(filters.get("allow_network")),
                                      filters.get("cache_dir"))  # fmt: skip
    vocab = len(tokenizer.is_byte_fallback)  # one entry per id the tokenizer can give
    if vocab - 1 > INT32_MAX:
        raise ConfigError(
            f"filters.tokenizer={spec}: its vocabulary of {vocab:,} ids does not fit int32, the widest token "
            "type Megatron reads; use a smaller vocabulary or drop output.token_formats"
        )
    append = bool(output.get("append_eos", True))
    eos = tokenizer.eos_id if tokenizer.eos_id is not None and tokenizer.eos_id >= 0 else None
    if append and eos is None:
        raise ConfigError(
            f"output.append_eos=true: filters.tokenizer={spec} has no end-of-sequence token to put between "
            "documents; set output.append_eos=false or use a tokenizer with an EOS"
        )
    return {
        "formats": formats,
        "tokenizer": str(spec),
        "append_eos": append,
        "eos_id": int(eos) if append else None,
        "vocab_size": int(vocab),
        "dtype": {f: str(dt) for f, dt in dtypes(vocab).items() if f in formats},
        "sft": sft,
        "cache_dir": filters.get("cache_dir"),
        "allow_network": bool(filters.get("allow_network")),
    }


def shard_key(source_digest: str, settings: dict) -> str:
    """What a shard's token files depend on: its rows and the settings (not where they are written)."""
    fixed = {k: settings[k] for k in ("formats", "tokenizer", "append_eos", "eos_id", "vocab_size", "sft")}
    return xxhash.xxh3_64_hexdigest(json.dumps([source_digest, fixed], sort_keys=True).encode())


def write_shard(source: dict, root: str, settings: dict) -> dict:
    """Task: the token files of one shard under ``root``; its counts and file digests."""
    from pipeline.output.sft_tokens import documents

    started = time.perf_counter()
    writer = ShardWriter(Path(root), source["name"], source["split"], settings["formats"], settings["vocab_size"],
                         settings["eos_id"], settings["tokenizer"], masks=settings["sft"])  # fmt: skip
    for flat, lengths, mask in documents(source, settings):
        writer.add(flat, lengths, mask)
    summary = writer.close()
    return {**source, **summary, "seconds": round(time.perf_counter() - started, 3)}


def run_sources(out: Path, shards: list[dict], text_column: str = "text") -> list[dict]:
    """The published data shards of a run as token-file sources (their stored ids where the run kept them)."""
    from pipeline.output.packing import TOKENS

    return [
        {
            "name": Path(s["file"]).stem,
            "split": s["split"],
            "path": str(out / "data" / s["file"]),
            "tokens": str(out / TOKENS / s["file"]),
            "digest": s["digest"],
            "text_column": text_column,
        }
        for s in shards
    ]


def remove_stale(out: Path) -> None:
    """A run without token files removes an earlier run's ``tokenized/`` (its manifest no longer lists it)."""
    from pipeline.output.snapshot import Snapshot

    if (out / TOKENIZED).exists():
        Snapshot(out).commit((TOKENIZED,), unchanged=False)


def write_token_files(out: Path, sources: list[dict], settings: dict, previous: dict | None) -> dict:
    """Write ``out/tokenized`` from ``sources`` (``name``, ``split``, ``path``, ``tokens``, ``digest``) in
    Ray tasks, staged and swapped in; the manifest's ``tokenized`` section."""
    import ray

    from pipeline import faults
    from pipeline.output.snapshot import Snapshot

    started = time.perf_counter()
    snapshot = Snapshot(out)
    staged = snapshot.staging / TOKENIZED
    staged.mkdir(parents=True, exist_ok=True)
    published = {s["name"]: s for s in (previous or {}).get("shards", [])}
    done, todo = [], []
    for source in sources:
        source = {**source, "key": shard_key(source["digest"], settings)}
        old = published.get(source["name"])
        current = out / TOKENIZED
        if old and old.get("key") == source["key"] and all((current / f).is_file() for f in old["files"]):
            for rel in old["files"]:  # the same rows and settings: the published files, linked
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).hardlink_to(current / rel)
            done.append({**source, **old, "key": source["key"]})  # old: its counts and digests
        else:
            todo.append(source)
    task = ray.remote(num_cpus=1)(write_shard)
    pending = [task.remote(s, str(staged), settings) for s in todo]
    while pending:  # merged as they arrive: a few numbers and digests per shard
        ready, pending = ray.wait(pending)
        done += ray.get(ready)
        faults.phase("tokfiles")  # a kill here leaves some shards staged, nothing published
    done.sort(key=lambda s: s["name"])
    blend = megatron_blend(out, staged, done) if "megatron" in settings["formats"] else {}
    files = {rel: d for s in done for rel, d in s["files"].items()}
    old_files = {rel: d for s in published.values() for rel, d in s["files"].items()}
    unchanged = bool(done) and not todo and files == old_files and blend == (previous or {}).get("blend")
    snapshot.commit((TOKENIZED,), unchanged)
    splits: dict[str, dict] = {}
    for s in done:
        split = splits.setdefault(s["split"], {"shards": 0, "documents": 0, "tokens": 0})
        split["shards"] += 1
        split["documents"] += s["documents"]
        split["tokens"] += s["tokens"]
    keep = ("name", "split", "source", "key", "documents", "tokens", "files", "seconds")
    section = {k: v for k, v in settings.items() if k not in ("cache_dir", "allow_network")}
    section.update(
        folder=TOKENIZED,
        splits=splits,
        shards=[{k: s[k] for k in keep if k in s} for s in done],
        blend=blend,
        written=len(todo),
        unchanged=unchanged,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "token files: %d shards written, %d reused, formats %s",
        len(todo),
        len(done) - len(todo),
        settings["formats"],
    )
    return section


def megatron_blend(out: Path, staged: Path, shards: list[dict]) -> dict:
    """Megatron's data arguments: ``blend.json`` for ``--per-split-data-args-path`` (per split, token
    counts as weights and absolute prefixes) and ``data-args.txt`` (the train split) for
    ``--data-args-path``; returns their digests."""
    prefixes: dict[str, list[str]] = {}
    for s in shards:
        prefix = (out / TOKENIZED / "megatron" / s["name"]).resolve()
        prefixes.setdefault(s["split"], []).extend([str(s["tokens"]), str(prefix)])
    per_split = {"train": prefixes.get("train"), "valid": prefixes.get("validation"), "test": None}
    texts = {"blend.json": json.dumps(per_split, indent=1) + "\n", "data-args.txt": " ".join(prefixes.get("train", [])) + "\n"}  # fmt: skip
    digests = {}
    for name, text in texts.items():
        (staged / "megatron" / name).write_text(text)
        digests[f"megatron/{name}"] = xxhash.xxh3_64_hexdigest(text.encode())
    return digests
