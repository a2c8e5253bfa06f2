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


def partition_map(ds, key: str, fn: Callable[[dict], dict], parts: int, **kwargs):
    """``fn(rows, **kwargs)`` over the rows of each partition of column ``key``; ``fn`` gets and returns
    a dict of numpy arrays."""
    ds = nonempty(ds)
    tagged = ds.map_batches(_tag, fn_kwargs={"key": key, "parts": parts}, batch_format="numpy")
    return tagged.groupby(PART, num_partitions=shuffle_partitions(parts)).map_groups(
        _run, fn_kwargs={"fn": fn, "kwargs": kwargs}, batch_format="numpy"
    )


def _tag(batch: dict, key: str, parts: int) -> dict:
    batch[PART] = (key_hash(batch[key]) % np.uint64(parts)).astype(np.int64)
    return batch


def _run(batch: dict, fn: Callable, kwargs: dict) -> dict:
    batch.pop(PART, None)
    return fn(batch, **kwargs)
