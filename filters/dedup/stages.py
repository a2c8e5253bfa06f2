"""Near-dedup stages for Ray Data, each a plain function or class over a dict-of-arrays batch.

The distributed plan (wired up in ``pipeline/near_dedup.py``) is:

1. :class:`MinHashSignatures` (``map_batches``) adds ``lsh_bands``, the band keys of each row.
2. :func:`explode_bands` (``map_batches``) emits one ``(lsh_key, lsh_doc, lsh_part)`` row per band;
   ``groupby("lsh_part").map_groups(bucket_edges)`` sorts each partition by key and links every
   bucket member to the bucket's first member: enough edges to connect candidates, never all pairs.
3. Components of those edges are labelled inside Ray (:mod:`filters.dedup.components`): in one task
   when they are few, by large-star / small-star rounds over hash partitions of nodes otherwise.
4. :func:`assign_components` (labels broadcast by reference) or a hash join plus
   :func:`part_of_label` tags rows with their component; ``groupby("lsh_part")`` brings each
   component's rows (with their texts) together and :class:`ClusterGroup` verifies, clusters and
   applies the keep rule there, exactly as :func:`filters.dedup.lsh.near_dedup` would on all rows, because
   no candidate pair crosses a component.
"""

from __future__ import annotations

import numpy as np

from filters.dedup.lsh import cluster_rows, empty_keys, id_hashes
from filters.dedup.minhash import (
    MinHashConfig,
    band_keys,
    band_matrix,
    bands_array,
    permutations,
    shingle_hashes,
    signatures,
)
from filters.rules.base import current_reasons, record_drops

REASON = "near_duplicate"


def _require(batch: dict, column: str, key: str) -> None:
    if column not in batch:
        raise ValueError(f"near dedup: {key}={column!r} is not a column; columns are {sorted(batch)}")


class MinHashSignatures:
    """Stage: adds ``lsh_bands``, the LSH band keys of each text (an Arrow list column of ``bands`` uint64:
    :func:`filters.dedup.minhash.band_matrix` reads it back as ``(rows, bands)``).

    Args:
        text_column: Column holding the text.
        **cfg: Near-dedup settings (keys of :class:`filters.dedup.minhash.MinHashConfig`).
    """

    def __init__(self, text_column: str = "text", **cfg):
        self.cfg = MinHashConfig.from_dict(cfg)
        self.text_column = text_column
        self.a, self.b = permutations(self.cfg.num_perm, self.cfg.seed)

    def __call__(self, batch: dict) -> dict:
        _require(batch, self.text_column, "text_column")
        hashes, offsets = shingle_hashes([str(t) for t in batch[self.text_column]], self.cfg.ngram)
        sig = signatures(hashes, offsets, self.a, self.b)
        batch["lsh_bands"] = bands_array(band_keys(sig, self.cfg.bands, self.cfg.rows))
        return batch


def explode_bands(batch: dict, id_column: str, num_parts: int, **cfg) -> dict:
    """One row per (text, band) for non-empty texts: band key, id hash and shuffle partition."""
    settings = MinHashConfig.from_dict(cfg)
    keys = band_matrix(batch["lsh_bands"], settings.bands)
    nonempty = ~(keys == empty_keys(settings)).all(axis=1)
    flat = keys[nonempty].reshape(-1)
    return {
        "lsh_key": flat,
        "lsh_doc": np.repeat(id_hashes(np.asarray(batch[id_column], dtype=object)[nonempty]), settings.bands),
        "lsh_part": (flat % np.uint64(num_parts)).astype(np.int64),
    }


def bucket_edges(batch: dict) -> dict:
    """Star edges ``(lsh_a, lsh_b)`` of the buckets in one partition, deduplicated."""
    key = np.asarray(batch["lsh_key"], dtype=np.uint64)
    doc = np.asarray(batch["lsh_doc"], dtype=np.uint64)
    order = np.lexsort((doc, key))
    key, doc = key[order], doc[order]
    start = np.ones(len(key), bool)
    start[1:] = key[1:] != key[:-1]
    hub = doc[np.maximum.accumulate(np.where(start, np.arange(len(key)), 0))]
    link = (~start) & (hub != doc)
    edges = np.unique(np.stack([hub[link], doc[link]], axis=1), axis=0) if link.any() else np.zeros((0, 2))
    return {"lsh_a": edges[:, 0].astype(np.uint64), "lsh_b": edges[:, 1].astype(np.uint64)}


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted doc hashes that have an edge, and their component labels (the component's smallest doc hash)."""
    from filters.dedup.components import local_components

    labels = local_components(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return labels["lsh_doc"], labels["lsh_comp"]


def assign_components(
    batch: dict, docs: np.ndarray, comps: np.ndarray, id_column: str, num_parts: int
) -> dict:
    """Adds ``lsh_part``: the clustering partition of the row's component, -1 for a row with no candidate."""
    h = id_hashes(np.asarray(batch[id_column], dtype=object))
    pos = np.minimum(np.searchsorted(docs, h), max(len(docs) - 1, 0))
    found = (docs[pos] == h) if len(docs) else np.zeros(len(h), bool)
    comp = np.asarray(comps, np.uint64)[pos] if len(docs) else np.zeros(len(h), np.uint64)
    batch["lsh_part"] = np.where(found, (comp % np.uint64(max(num_parts, 1))).astype(np.int64), -1)
    return batch


def part_of_label(table, num_parts: int):
    """On a pyarrow table joined with the labels: ``lsh_part`` from ``lsh_comp`` (null: no candidate, -1);
    the label columns go."""
    import pyarrow as pa

    comp = table.column("lsh_comp").combine_chunks()
    found = comp.is_valid().to_numpy(zero_copy_only=False)
    values = comp.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
    part = np.where(found, (values % np.uint64(max(num_parts, 1))).astype(np.int64), -1)
    table = table.drop_columns([c for c in ("lsh_comp", "lsh_doc") if c in table.column_names])
    return table.append_column("lsh_part", pa.array(part, pa.int64()))


class ClusterGroup:
    """Group stage: verified clusters and keep decisions for the rows of whole components.

    Sets ``cluster_id`` (id of the kept row), ``duplicate_of`` (that id on removed rows, "" on kept
    ones) and ``drop_reason="near_duplicate"`` on removed rows.

    Args:
        text_column: Column holding the text.
        id_column: Column holding the unique row id.
        **cfg: Near-dedup settings; ``keep_by`` names the score column (higher is kept).
    """

    def __init__(self, text_column: str = "text", id_column: str = "id", **cfg):
        self.cfg = MinHashConfig.from_dict(cfg)
        self.text_column, self.id_column = text_column, id_column

    def __call__(self, batch: dict) -> dict:
        _require(batch, self.id_column, "id_column")
        if self.cfg.keep_by:
            _require(batch, self.cfg.keep_by, "dedup.keep_by")
        ids = np.asarray(batch[self.id_column], dtype=object)
        keys = band_matrix(batch["lsh_bands"], self.cfg.bands)
        scores = batch[self.cfg.keep_by] if self.cfg.keep_by else None
        keeper, _ = cluster_rows(ids, [str(t) for t in batch[self.text_column]], keys, scores, self.cfg)
        removed = keeper != np.arange(len(ids))
        batch["cluster_id"] = ids[keeper].astype(str).astype(object)
        duplicate_of = np.asarray(batch["duplicate_of"], dtype=object).copy()
        duplicate_of[removed] = batch["cluster_id"][removed]
        batch["duplicate_of"] = duplicate_of
        before = current_reasons(batch)
        reasons = before.copy()
        reasons[removed] = REASON
        record_drops(batch, before, reasons, "near_dedup")
        return batch
