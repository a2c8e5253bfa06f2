"""Near-dedup stages for Ray Data, each a plain function or class over a dict-of-arrays batch.

The distributed plan (wired up in ``pipeline/near_dedup.py``) is:

1. :class:`MinHashSignatures` (``map_batches``) adds ``lsh_bands``, the band keys of each row.
2. :func:`explode_bands` (``map_batches``) emits one ``(lsh_key, lsh_doc, lsh_part)`` row per band;
   ``groupby("lsh_part").map_groups(bucket_edges)`` sorts each partition by key and links every
   bucket member to the bucket's first member: enough edges to connect candidates, never all pairs.
3. The driver labels connected components of those edges (:func:`filters.dedup.unionfind.
   connected_components`); it holds 16 bytes per edge and no text.
4. :func:`assign_components` tags rows with their component; ``groupby("lsh_part")`` brings each
   component's rows (with their texts) together and :class:`ClusterGroup` verifies, clusters and
   applies the keep rule there, exactly as :func:`filters.dedup.lsh.near_dedup` would on all rows, because
   no candidate pair crosses a component.
"""

from __future__ import annotations

import numpy as np

from filters.dedup.lsh import cluster_rows, empty_keys, id_hashes
from filters.dedup.minhash import MinHashConfig, band_keys, permutations, shingle_hashes, signatures
from filters.rules.base import current_reasons, record_drops

REASON = "near_duplicate"


def _require(batch: dict, column: str, key: str) -> None:
    if column not in batch:
        raise ValueError(f"near dedup: {key}={column!r} is not a column; columns are {sorted(batch)}")


class MinHashSignatures:
    """Stage: adds ``lsh_bands``, uint64 ``(rows, bands)``: the LSH band keys of each text.

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
        batch["lsh_bands"] = band_keys(sig, self.cfg.bands, self.cfg.rows)
        return batch


def explode_bands(batch: dict, id_column: str, num_parts: int, **cfg) -> dict:
    """One row per (text, band) for non-empty texts: band key, id hash and shuffle partition."""
    settings = MinHashConfig.from_dict(cfg)
    keys = np.asarray(batch["lsh_bands"], dtype=np.uint64).reshape(-1, settings.bands)
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
    """Sorted doc hashes that have an edge, and their component labels (dense ints from 0)."""
    from filters.dedup.unionfind import connected_components

    docs, inverse = np.unique(np.concatenate([a, b]).astype(np.uint64), return_inverse=True)
    labels = connected_components(len(docs), inverse[: len(a)], inverse[len(a) :])
    return docs, np.unique(labels, return_inverse=True)[1].astype(np.int64)


def assign_components(
    batch: dict, docs: np.ndarray, comps: np.ndarray, id_column: str, num_parts: int
) -> dict:
    """Adds ``lsh_comp`` (component label, -1 for a row with no candidate) and ``lsh_part``."""
    h = id_hashes(np.asarray(batch[id_column], dtype=object))
    pos = np.minimum(np.searchsorted(docs, h), max(len(docs) - 1, 0))
    found = (docs[pos] == h) if len(docs) else np.zeros(len(h), bool)
    comp = np.where(found, comps[pos] if len(docs) else -1, -1).astype(np.int64)
    batch["lsh_comp"] = comp
    batch["lsh_part"] = np.where(comp >= 0, comp % max(num_parts, 1), -1)
    return batch


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
        keys = np.asarray(batch["lsh_bands"], dtype=np.uint64).reshape(len(ids), self.cfg.bands)
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
