"""Ground truth for near-dedup benchmarks: exact Jaccard of similar pairs, and the two scores.

``exact_pairs`` is all-pairs: a sparse shingle-incidence product ``X @ X.T`` counts the shared
shingles of every pair of documents that share any, so nothing is sampled or estimated; its memory
grows with the pairs that share a shingle, which is fine to ~30k documents. ``planted_pairs`` is
for larger corpora: every pair inside a planted family plus every candidate of a deliberately loose
LSH (40 bands x 3 rows: P(candidate) >= 0.995 at J = 0.5, >= 0.99994 at J = 0.6), all measured by
exact Jaccard. Both use the shingles of :mod:`filters.dedup.minhash`, the sets every method sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from filters.dedup.lsh import candidate_pairs, id_hashes, jaccard
from filters.dedup.minhash import MinHashConfig, minhash_bands, shingle_hashes, shingle_sets

LOOSE = MinHashConfig(num_perm=120, bands=40, rows=3)


@dataclass
class Pairs:
    """Document pairs ``i < j`` with exact Jaccard ``sim >= floor``."""

    i: np.ndarray
    j: np.ndarray
    sim: np.ndarray
    floor: float
    method: str


def exact_pairs(texts, ngram: int = 5, floor: float = 0.5) -> Pairs:
    """Every pair with Jaccard >= ``floor``, by a sparse all-pairs intersection count."""
    from scipy import sparse

    hashes, offsets = shingle_hashes(texts, ngram)
    counts = np.diff(offsets)
    doc = np.repeat(np.arange(len(counts)), counts)
    shingle = np.unique(hashes, return_inverse=True)[1].astype(np.uint64)
    pair_code = np.unique(doc.astype(np.uint64) << np.uint64(32) | shingle)
    rows = (pair_code >> np.uint64(32)).astype(np.int64)
    cols = (pair_code & np.uint64(0xFFFFFFFF)).astype(np.int64)
    size = np.bincount(rows, minlength=len(counts))
    x = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(counts), cols.max() + 1))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    sim = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    keep = sim >= floor
    return Pairs(inter.row[keep], inter.col[keep], sim[keep], floor, "exact all-pairs")


def planted_pairs(texts, family: np.ndarray, ngram: int = 5, floor: float = 0.5) -> Pairs:
    """Pairs with Jaccard >= ``floor`` among planted families and loose-LSH candidates."""
    cfg = MinHashConfig(num_perm=LOOSE.num_perm, bands=LOOSE.bands, rows=LOOSE.rows, ngram=ngram)
    lo, hi = candidate_pairs(minhash_bands(texts, cfg), id_hashes(range(len(texts))), window=None)
    order = np.argsort(family, kind="stable")
    fam_sorted = family[order]
    extra = [lo * len(texts) + hi]
    for d in range(1, 64):  # families are small; 64 bounds the longest chain the builder makes
        same = np.flatnonzero(fam_sorted[d:] == fam_sorted[:-d])
        if not len(same):
            break
        a, b = order[same], order[same + d]
        extra.append(np.minimum(a, b) * len(texts) + np.maximum(a, b))
    code = np.unique(np.concatenate(extra))
    i, j = code // len(texts), code % len(texts)
    docs = np.unique(np.concatenate([i, j]))
    sets = dict(zip(docs.tolist(), shingle_sets([texts[k] for k in docs], ngram), strict=True))
    sim = np.fromiter(
        (jaccard(sets[a], sets[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)), float, len(i)
    )
    keep = sim >= floor
    return Pairs(i[keep], j[keep], sim[keep], floor, "planted families + loose LSH (40x3) candidates")


def best_partner(n: int, pairs: Pairs) -> np.ndarray:
    """Highest Jaccard of each document with any other (0 where below the pairs' floor)."""
    best = np.zeros(n)
    np.maximum.at(best, pairs.i, pairs.sim)
    np.maximum.at(best, pairs.j, pairs.sim)
    return best


@dataclass
class Score:
    """How one method's kept set fares against the ground truth."""

    pairs_at_threshold: int
    missed: int
    miss_rate: float
    removed: int
    false_removals: int  # removed, yet no document anywhere has Jaccard >= false_below with it
    removed_below_threshold: int  # removed with best partner in [false_below, threshold)


def score(keep: np.ndarray, pairs: Pairs, threshold: float = 0.8, false_below: float = 0.6) -> Score:
    """Miss rate over pairs with J >= threshold (both survive) and removals without a close partner."""
    assert pairs.floor <= false_below, "ground truth floor must be at or below false_below"
    at = pairs.sim >= threshold
    missed = int(np.count_nonzero(keep[pairs.i[at]] & keep[pairs.j[at]]))
    best = best_partner(len(keep), pairs)
    removed = ~keep
    return Score(
        pairs_at_threshold=int(at.sum()),
        missed=missed,
        miss_rate=missed / max(int(at.sum()), 1),
        removed=int(removed.sum()),
        false_removals=int(np.count_nonzero(removed & (best < false_below))),
        removed_below_threshold=int(np.count_nonzero(removed & (best >= false_below) & (best < threshold))),
    )
