"""Hash partitions: every row with the same key in one group, handled by one task (a Ray Data groupby).

The dataset-level stages that compare rows (exact dedup by text hash, best-of-n by request group)
route each row to partition ``hash(key) mod parts`` and run a plain function over each partition's
rows; nothing about the rows reaches the driver, and the result does not depend on how Ray laid out
the blocks, because every group lies whole inside one partition.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import xxhash

from pipeline.stages import INTERNAL_PREFIX

PART = f"{INTERNAL_PREFIX}part"
ROWS_PER_PART = 100_000  # rows a partition holds at most (partitions also never fewer than the shuffle's)
# Up to this many rows a groupby runs as one task over one block instead of a hash shuffle: Ray Data's
# shuffle starts aggregator actors (new worker processes) for every groupby, seconds each on a laptop,
# which dominated small runs (a 30-row run: 20 s with shuffles, 5 s without; same shards).
ONE_TASK_ROWS = 20_000


def parts_for(ds) -> int:
    """Partitions for ``ds`` (materialized: its row count is metadata): ``cluster.shuffle_partitions``
    (Ray Data's hash-shuffle parallelism), more when a partition would hold over :data:`ROWS_PER_PART` rows."""
    from ray.data import DataContext

    shuffle = DataContext.get_current().default_hash_shuffle_parallelism or 2
    return max(int(shuffle), math.ceil(ds.count() / ROWS_PER_PART))


def shuffle_partitions(groups: int) -> int:
    """``num_partitions`` of a groupby with ``groups`` distinct keys: ``cluster.shuffle_partitions``, but
    no more than there are groups (each partition costs a task and an output however few its rows)."""
    from ray.data import DataContext

    return max(1, min(int(groups), int(DataContext.get_current().default_hash_shuffle_parallelism or 200)))


def key_hash(values) -> np.ndarray:
    """uint64 of each key: int keys as they are, other keys by xxh3 of their string form."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64).view(np.uint64)
    return np.fromiter((xxhash.xxh3_64_intdigest(str(v).encode()) for v in values), np.uint64, len(values))


def nonempty(ds):
    """``ds`` materialized without its empty blocks. A Ray task whose every output was filtered away can
    leave a block without columns, and a hash shuffle cannot concatenate it with the others."""
    import ray

    ds = ds.materialize()
    refs, empty = [], 0
    for bundle in ds.iter_internal_ref_bundles():
        for ref, meta in zip(bundle.block_refs, bundle.metadata):
            if meta.num_rows:
                refs.append(ref)
            else:
                empty += 1
    return ray.data.from_arrow_refs(refs) if empty and refs else ds


def map_groups(
    ds,
    key: str | list[str],
    fn: Callable,
    num_partitions: int,
    *,
    batch_format: str = "numpy",
    fn_kwargs: dict | None = None,
    **remote,
):
    """``ds.groupby(key, num_partitions).map_groups(fn, ...)``, or for a small dataset (at most
    :data:`ONE_TASK_ROWS` rows) the same calls of ``fn``, one per group, inside one task.

    The result holds the same rows either way (``fn`` sees the same groups); only their order and
    block layout differ, which nothing downstream depends on (shards are sorted by id).
    """
    ds = nonempty(ds)
    if ds.count() > ONE_TASK_ROWS:
        return ds.groupby(key, num_partitions=num_partitions).map_groups(
            fn, fn_kwargs=fn_kwargs or {}, batch_format=batch_format, **remote
        )
    keys = [key] if isinstance(key, str) else list(key)
    kwargs = {"keys": keys, "fn": fn, "fn_kwargs": fn_kwargs or {}, "batch_format": batch_format}
    remote.pop("compute", None)  # one task: no pool to size
    remote.setdefault(
        "num_cpus", 0.25
    )  # beside actor pools that hold their CPUs (a whole one may never come free)
    return ds.repartition(1).map_batches(
        _each_group, fn_kwargs=kwargs, batch_size=None, batch_format="pyarrow", **remote
    )


def _each_group(table, keys: list[str], fn: Callable, fn_kwargs: dict, batch_format: str):
    """Yield ``fn(group)`` for each group of equal ``keys`` of one Arrow block (as Ray's map_groups
    would call it: the group's rows in ``batch_format``)."""
    from ray.data.block import BlockAccessor

    if table.num_rows == 0:
        return
    table = table.sort_by([(k, "ascending") for k in keys])
    columns = [table.column(k).to_numpy(zero_copy_only=False) for k in keys]
    change = np.zeros(table.num_rows, dtype=bool)
    change[0] = True
    for values in columns:
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change).tolist() + [table.num_rows]
    for start, end in zip(starts, starts[1:]):
        group = table.slice(start, end - start)
        out = fn(BlockAccessor.for_block(group).to_batch_format(batch_format), **fn_kwargs)
        if _num_rows(out):
            yield out


def _num_rows(batch) -> int:
    if batch is None:
        return 0
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)  # an Arrow table or a pandas frame


def partition_map(ds, key: str, fn: Callable[[dict], dict], parts: int, **kwargs):
    """``fn(rows, **kwargs)`` over the rows of each partition of column ``key``; ``fn`` gets and returns
    a dict of numpy arrays."""
    ds = nonempty(ds)
    tagged = ds.map_batches(_tag, fn_kwargs={"key": key, "parts": parts}, batch_format="numpy")
    return map_groups(tagged, PART, _run, shuffle_partitions(parts), fn_kwargs={"fn": fn, "kwargs": kwargs})


def _tag(batch: dict, key: str, parts: int) -> dict:
    batch[PART] = (key_hash(batch[key]) % np.uint64(parts)).astype(np.int64)
    return batch


def _run(batch: dict, fn: Callable, kwargs: dict) -> dict:
    batch.pop(PART, None)
    return fn(batch, **kwargs)
