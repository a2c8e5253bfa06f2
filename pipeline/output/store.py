"""``output.dir`` on an object store (``s3://``, ``gs://``, any URI pyarrow's filesystems open).

The run works in ``output.work_dir`` (checkpoints, staging, shards: a path every node shares, as for
any run), then :func:`publish_to_store` copies what it published (``data/``, ``rejected/``,
``packed/``, ``README.md``, ``report.html`` and its funnel plot, ``config.yaml``) to the store through ``pyarrow.fs``, removes the store's
shards that the run no longer has, and writes ``manifest.json`` last: a reader that lists shards from
the manifest never sees a half-copied set. Files whose name and content digest the store's manifest
already lists are not copied again, so a rerun that changed nothing rewrites nothing.

Settings of the store go in the URI's query, as pyarrow takes them (e.g.
``s3://bucket/run1?endpoint_override=host:9000&scheme=http``); credentials come from the
environment (``AWS_ACCESS_KEY_ID`` ..., ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import xxhash

from generators.errors import ConfigError

FOLDERS = ("data", "rejected", "packed")
FILES = ("README.md", "report.html", "report-funnel.png", "config.yaml")  # the card links the report


def is_uri(path: str) -> bool:
    return "://" in str(path)


def open_store(uri: str, key: str = "output.dir"):
    """``(filesystem, root path)`` of ``uri``; a one-line error when pyarrow cannot open it."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(str(uri))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with multi-line text
        raise ConfigError(f"{key}={uri}: cannot open it with pyarrow's filesystems ({_line(exc)})") from None
    return fs, root.rstrip("/")


def check_writable(uri: str, key: str = "output.dir") -> None:
    """Write and delete a probe object, so a missing bucket or bad credentials fail before any work."""
    fs, root = open_store(uri, key)
    probe = f"{root}/.litho-write-test-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"")
        fs.delete_file(probe)
    except Exception as exc:
        raise ConfigError(
            f"{key}={uri}: not writable ({_line(exc)}); check the bucket and credentials"
        ) from None


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _digest(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def _read(fs, path: str) -> bytes | None:
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def _known(fs, root: str) -> dict[str, str]:
    """``{relative path: digest}`` of the shards the store's manifest lists."""
    raw = _read(fs, f"{root}/manifest.json")
    if raw is None:
        return {}
    try:
        manifest = json.loads(raw)
    except ValueError:
        return {}
    known = {f"data/{s['file']}": s["digest"] for s in manifest.get("shards", [])}
    known.update({f"rejected/{s['file']}": s["digest"] for s in manifest.get("rejected_shards", [])})
    for split in (manifest.get("packed") or {}).get("splits", {}).values():
        known.update({f"packed/{s['file']}": s["digest"] for s in split.get("shards", [])})
    return known


def publish_to_store(work: Path, uri: str) -> dict:
    """Copy a finished run's published files from ``work`` to the store at ``uri``; returns counts."""
    import pyarrow.fs as pafs

    fs, root = open_store(uri)
    known = _known(fs, root)
    local = [p for folder in FOLDERS for p in sorted((work / folder).glob("*.parquet"))]
    wanted = {str(p.relative_to(work)) for p in local}
    copied = kept = removed = 0
    for path in local + [work / name for name in FILES if (work / name).is_file()]:
        rel = str(path.relative_to(work))
        data = path.read_bytes()
        if rel in known and known[rel] == _digest(data):
            kept += 1
            continue
        fs.create_dir(f"{root}/{Path(rel).parent}".rstrip("/."), recursive=True)
        with fs.open_output_stream(f"{root}/{rel}") as f:
            f.write(data)
        copied += 1
    with fs.open_output_stream(f"{root}/manifest.json") as f:  # after the shards it names
        f.write((work / "manifest.json").read_bytes())
    # Only then the shards of an earlier run that this one no longer has: until the new manifest is in
    # place, the old one still names them.
    for folder in FOLDERS:
        selector = pafs.FileSelector(f"{root}/{folder}", allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File and f"{folder}/{info.base_name}" not in wanted:
                fs.delete_file(info.path)
                removed += 1
    return {"uri": uri, "copied": copied, "unchanged": kept, "removed": removed}
