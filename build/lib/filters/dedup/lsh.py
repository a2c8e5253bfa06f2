"""LSH candidate pairs, exact-Jaccard verification, clusters and the keep rule.

:func:`near_dedup` is the whole near-duplicate step in memory; :func:`cluster_rows` is its second
half (from band keys to decisions), which the Ray graph runs per group of connected candidates.
A pair of texts is a duplicate when it shares an LSH band and (with ``verify``) its shingle sets have
exact Jaccard similarity >= ``threshold``; duplicates are joined transitively (union-find) and each
cluster keeps one text: the highest ``keep_by`` score, then the smallest id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xxhash

from filters.dedup.minhash import EMPTY, MinHashConfig, band_keys, minhash_bands, shingle_sets
from filters.dedup.unionfind import UnionFind, connected_components

log = logging.getLogger(__name__)

# A bucket larger than WINDOW + 1 (thousands of copies of a template) pairs each member with its
# WINDOW successors in id-hash order instead of with every member: linear, not quadratic, and the
# verified edges still chain the whole bucket into one cluster when its members are alike.
WINDOW = 32


@dataclass
class NearDedupResult:
    """Per-row decisions of :func:`near_dedup`, aligned with its input.

    Attributes:
        keep: False for a row removed as a near duplicate.
        cluster_id: Id of the row its cluster keeps (its own id for a kept or unique row; an
            earlier run's id when it duplicates the cross-run index).
        duplicate_of: For removed rows, the id of the kept row; None for kept rows.
        stats: Counters: docs, candidate pairs, verified pairs, removed, index matches, index bytes.
    """

    keep: np.ndarray
    cluster_id: np.ndarray
    duplicate_of: np.ndarray
    stats: dict = field(default_factory=dict)


def id_hashes(ids) -> np.ndarray:
    """xxh3_64 of each id's string form: an order for ties that does not depend on row order."""
    return np.fromiter((xxhash.xxh3_64_intdigest(str(i).encode()) for i in ids), np.uint64, len(ids))


def empty_keys(cfg: MinHashConfig) -> np.ndarray:
    """Band keys of a text without shingles; such texts are never near duplicates."""
    return band_keys(np.full((1, cfg.num_perm), EMPTY, dtype=np.uint32), cfg.bands, cfg.rows)[0]


def candidate_pairs(
    keys: np.ndarray, tiebreak: np.ndarray, active=None, window: int | None = WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs ``(lo, hi)`` of row indices, ``lo < hi``, that share at least one band key.

    Args:
        keys: Band keys, ``(n, bands)`` uint64.
        tiebreak: Per-row uint64 that orders members of one bucket (see :data:`WINDOW`).
        active: Rows that take part; None means all.
        window: Successors each bucket member pairs with; None pairs every member with every other.
    """
    n = len(keys)
    rows = np.arange(n) if active is None else np.flatnonzero(active)
    found = []
    for band in range(keys.shape[1]):
        order = np.lexsort((tiebreak[rows], keys[rows, band]))
        sorted_keys, members = keys[rows, band][order], rows[order]
        for d in range(1, (window or len(rows)) + 1):
            same = np.flatnonzero(sorted_keys[d:] == sorted_keys[:-d])
            if not len(same):
                break
            found.append((members[same], members[same + d]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = np.concatenate([f[0] for f in found])
    b = np.concatenate([f[1] for f in found])
    code = np.unique(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    return code // n, code % n


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique arrays."""
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return 0.0
    pos = np.searchsorted(b, a)
    pos[pos == len(b)] = 0
    inter = int(np.count_nonzero(b[pos] == a))
    return inter / (len(a) + len(b) - inter)


def verify_and_join(lo, hi, sets: dict, threshold: float, uf: UnionFind) -> int:
    """Union every candidate pair whose exact Jaccard is >= threshold; returns pairs computed.

    A pair already in one cluster is skipped: it could not change the clusters, which are the
    connected components of the verified candidate graph whatever the pair order. So is a pair
    whose set sizes alone bound its Jaccard below the threshold (J <= |small| / |large|).
    """
    computed = 0
    for i, j in zip(lo.tolist(), hi.tolist(), strict=True):
        if uf.find(i) == uf.find(j):
            continue
        a, b = sets[i], sets[j]
        if min(len(a), len(b)) < threshold * max(len(a), len(b)):
            continue
        computed += 1
        if jaccard(a, b) >= threshold:
            uf.union(i, j)
    return computed


def verify_components(
    n: int, lo, hi, texts, cfg: MinHashConfig, uf: UnionFind, batch_docs: int = 2048
) -> int:
    """:func:`verify_and_join` a batch of whole candidate components at a time.

    Only one batch of shingle sets (8 bytes a shingle) is in memory at once, instead of the sets
    of every candidate text; no candidate pair leaves its component, so batches are independent.
    """
    comp = connected_components(n, lo, hi)
    order = np.argsort(comp[lo], kind="stable")
    lo, hi = lo[order], hi[order]
    pair_comp = comp[lo]
    docs = np.unique(np.concatenate([lo, hi]))
    docs = docs[np.argsort(comp[docs], kind="stable")]
    doc_comp = comp[docs]
    computed, start = 0, 0
    while start < len(docs):
        end = int(np.searchsorted(doc_comp, doc_comp[min(start + batch_docs, len(docs)) - 1], "right"))
        batch = docs[start:end]
        sets = dict(zip(batch.tolist(), shingle_sets([texts[i] for i in batch], cfg.ngram), strict=True))
        first = np.searchsorted(pair_comp, doc_comp[start], "left")
        last = np.searchsorted(pair_comp, doc_comp[end - 1], "right")
        computed += verify_and_join(lo[first:last], hi[first:last], sets, cfg.threshold, uf)
        start = end
    return computed


def keepers(labels: np.ndarray, ids: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """Index of the row each row's cluster keeps: highest score (NaN lowest), then smallest id."""
    neg = np.zeros(len(labels)) if scores is None else -np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    order = np.lexsort((ids, neg, labels))
    first = np.ones(len(order), bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(len(labels), np.int64)
    keeper_of_label[labels[order][first]] = order[first]
    return keeper_of_label[labels]


def sortable_ids(ids) -> np.ndarray:
    """Ids as a numpy array that sorts (str or int), after checking they are unique."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids.tolist())
    if arr.dtype == object:
        arr = arr.astype(str)
    if len(np.unique(arr)) != len(arr):
        raise ValueError("dedup: ids must be unique; give every row a distinct id (dedup.id_column)")
    return arr


def cluster_rows(
    ids, texts, keys: np.ndarray, scores, cfg: MinHashConfig, active=None
) -> tuple[np.ndarray, dict]:
    """Decisions for rows whose band keys are known: candidates, verification, clusters, keepers.

    Args:
        ids: Unique row ids.
        texts: Row texts (only candidates are re-shingled, for verification).
        keys: Band keys ``(n, bands)`` from :func:`filters.dedup.minhash.minhash_bands`.
        scores: Keep-rule scores or None.
        cfg: Near-dedup settings.
        active: Rows that take part (others are kept untouched); None means all.

    Returns:
        ``(keeper, stats)``: index of each row's kept row, and counters.
    """
    ids = sortable_ids(ids)
    n = len(ids)
    nonempty = ~(keys == empty_keys(cfg)).all(axis=1)
    active = nonempty if active is None else nonempty & active
    lo, hi = candidate_pairs(keys, id_hashes(ids), active)
    if cfg.verify:
        uf = UnionFind(n)
        computed = verify_components(n, lo, hi, texts, cfg, uf)
        labels = uf.labels()
    else:
        computed, labels = 0, connected_components(n, lo, hi)
    keeper = keepers(labels, ids, scores)
    stats = {
        "candidate_pairs": len(lo),
        "verified_pairs": computed,
        "removed": int((keeper != np.arange(n)).sum()),
    }
    return keeper, stats


def near_dedup(ids, texts, scores=None, cfg: MinHashConfig | None = None, index=None) -> NearDedupResult:
    """Near-duplicate removal over texts held in memory.

    Args:
        ids: Unique row ids (str or int).
        texts: Texts, aligned with ids.
        scores: Keep-rule scores aligned with ids (higher is kept), or None for smallest id.
        cfg: Near-dedup settings; defaults to :class:`filters.dedup.minhash.MinHashConfig()`.
        index: A loaded :class:`filters.dedup.index.DedupIndex` of earlier runs, or None.
    """
    cfg = cfg or MinHashConfig()
    texts = list(texts)
    keys = minhash_bands(texts, cfg)
    id_arr = sortable_ids(ids)
    prior = index.match(keys, texts) if index is not None else np.full(len(texts), None, object)
    fresh = np.array([p is None for p in prior], bool)
    keeper, stats = cluster_rows(id_arr, texts, keys, scores, cfg, active=fresh)
    keep = (keeper == np.arange(len(texts))) & fresh
    cluster_id = id_arr[keeper].astype(object)
    cluster_id[~fresh] = prior[~fresh]
    duplicate_of = np.where(keep, None, cluster_id).astype(object)
    stats.update(
        docs=len(texts),
        index_matches=int((~fresh).sum()),
        removed=int((~keep).sum()),
        index_bytes=int(keys.nbytes),
    )
    log.info("near_dedup: %s", stats)
    return NearDedupResult(keep=keep, cluster_id=cluster_id, duplicate_of=duplicate_of, stats=stats)
