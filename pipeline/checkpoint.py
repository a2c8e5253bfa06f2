"""Per-batch generation checkpoints: what makes a rerun resume instead of regenerate.

Every finished teacher batch is written as one Parquet file per plan block it holds rows of, under
``<output.dir>/.litho/generations/<teacher fingerprint>/block=<block>/``, named by a hash of its
request ids, to a temporary name and then renamed — so a crash leaves only whole files, and a rerun
of the same config compares each plan block's ids with that block's checkpoints (pipeline/plan.py,
one task per block) and asks the teacher only for the rest. The teacher fingerprint (model,
sampling, dtype, device, sampler version) keeps a rerun with another teacher from reusing these texts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

TIMING_KEY = b"litho_batch"  # Parquet metadata key of a batch file's timing

# Teacher keys that change how fast texts are made, not which texts: they keep the cache valid.
# Batch sizes and actor counts are among them because every request samples from its own counter
# (generators/teachers/sampling.py), so its text does not depend on its batch (tested in fp32 in
# tests/generators/teachers/test_determinism.py). dtype and device are not: bf16 and fp32, or CPU and
# CUDA, give different logits and so different texts.
OPERATIONAL_KEYS = {
    "batch_size",  # hf: rows per generate() call; fast: rows handed to one call
    "checkpoint_rows",  # the teacher stage: rows per checkpoint group, and how long a row waits for one
    "checkpoint_s",
    "price",  # USD per million tokens: only the cost estimate
    "threads",
    "cache_dir",
    "allow_network",
    "max_concurrency",  # openai: requests in flight; each request is answered on its own
    "adaptive_concurrency",
    "timeout_s",
    "max_retries",
    "api_key_env",
    "backoff_s",
    "backoff_max_s",
    "use_cuda_graphs",  # fast: a replayed step computes what the eager step computes
    "max_batch",
    "prompt_bucket",
    "prefill_tokens",
    "sync_every",  # fast: rows past a stop string are cut at it, whenever the host checks
    "refill",
    "max_seq_len",  # fast: only decides which requests fail (failures are never checkpointed)
    # teacher=vllm: engine sizing and scheduling; the texts depend only on each request's seed.
    "max_num_seqs",
    "kv_cache_gib",
    "gpu_memory_utilization",
    "chunked_prefill",
    "enforce_eager",
    # Not engine_kwargs: it takes any vllm.LLM argument, and some (quantization, max_model_len,
    # a tokenizer) change the texts. A needless cache miss costs a rerun; a wrong hit, wrong texts.
}


def teacher_fingerprint(teacher_cfg: dict) -> str:
    """Hash of the teacher config minus operational keys, plus litho's sampler version: another model,
    sampling config, dtype, sampler or token-aware strength / target means other texts."""
    from generators.teachers.sampling import SAMPLER_VERSION

    keep = {k: v for k, v in teacher_cfg.items() if k not in OPERATIONAL_KEYS}
    aware = keep.get("token_aware") or {}
    if not aware.get("strength") and not aware.get("ban_byte_fallback"):
        # Off, the bias is zero and the texts are the plain teacher's (tested): keep their checkpoints.
        keep.pop("token_aware", None)
    if isinstance(keep.get("sampling"), dict) and not keep["sampling"].get("min_p"):
        # min_p=0 is off (the key came later): configs without it keep their checkpoints.
        keep["sampling"] = {k: v for k, v in keep["sampling"].items() if k != "min_p"}
    if "_target_" in keep:  # the backend's class, not its module path: moving a module keeps the cache
        keep["_target_"] = str(keep["_target_"]).rsplit(".", 1)[-1]
    keep["_sampler"] = SAMPLER_VERSION
    return xxhash.xxh3_64_hexdigest(json.dumps(keep, sort_keys=True, default=str).encode())


def remove_partial(directory: Path) -> int:
    """Delete the half-written checkpoint files under ``directory`` (``.gen-*.tmp<pid>``): left by a
    teacher actor killed while writing, e.g. when a full disk ended the run while several checkpoint
    groups were being written. Call it only when no writer is alive (after Ray has shut down)."""
    removed = 0
    for path in Path(directory).rglob(".gen-*.tmp*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def write_batch(directory: Path, table: pa.Table, timing: dict | None = None) -> Path | None:
    """Write one finished batch atomically; never rewrite an existing file. ``timing`` (when the batch
    started, its seconds, the worker) goes in the file's metadata: the run report's teacher throughput."""
    if table.num_rows == 0:
        return None
    if timing:
        table = table.replace_schema_metadata({TIMING_KEY: json.dumps(timing).encode()})
    ids = sorted(table.column("id").to_pylist())
    path = directory / f"gen-{xxhash.xxh3_64_hexdigest('|'.join(ids).encode())}.parquet"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
    except OSError:  # a full disk: no partial file is left behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def batch_timing(source: Path | pa.Schema) -> dict | None:
    """The ``timing`` a batch file (or its schema) was written with; None for files from before it was
    recorded."""
    schema = source if isinstance(source, pa.Schema) else pq.read_schema(source)
    raw = (schema.metadata or {}).get(TIMING_KEY)
    return json.loads(raw) if raw else None


def block_dir(directory, block: int) -> Path:
    """Where the checkpoints of plan block ``block`` live (pipeline/plan.py: ``BLOCK_ROWS`` rows a block)."""
    return Path(directory) / f"block={block:06d}"


def block_files(directory, block: int) -> list[Path]:
    return sorted(block_dir(directory, block).glob("gen-*.parquet"))


def block_ids(directory, block: int) -> list[str]:
    """Request ids already answered in plan block ``block`` (only the id column is read)."""
    return [
        rid
        for path in block_files(directory, block)
        for rid in pq.read_table(path, columns=["id"])["id"].to_pylist()
    ]


def read_block(directory, block: int, ids=None) -> pa.Table | None:
    """The checkpointed rows of plan block ``block`` (None when it has none); with ``ids`` (uint64 request
    ids, :func:`id_numbers`), only those rows. A request held by two files counts once: the
    first file wins."""
    tables = [pq.read_table(path) for path in block_files(directory, block)]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]

    rid = table.column("id").to_numpy(zero_copy_only=False)
    _, first = np.unique(rid, return_index=True)
    keep = np.zeros(len(rid), bool)
    keep[first] = True
    if ids is not None:
        keep &= np.isin(id_numbers(rid), np.asarray(ids, dtype=np.uint64))
    return table if keep.all() else table.filter(pa.array(keep))


def id_numbers(ids) -> np.ndarray:
    """Request ids (16 hex digits, :func:`generators.prompts.plan.request_id`) as uint64: 8 bytes an id."""
    return np.fromiter((int(i, 16) for i in ids), dtype=np.uint64, count=len(ids))
