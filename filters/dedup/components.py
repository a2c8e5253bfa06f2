"""Connected components of the LSH candidate graph, one hash partition of nodes at a time.

The Ray graph (pipeline/near_dedup.py) labels every candidate document with its component without
the edges ever meeting in one place when there are many: it alternates the *large-star* and
*small-star* steps of Kiveris et al. 2014 ("Connected Components in MapReduce and Beyond"), each a
group-by on a node that only needs that node's edges. They converge (O(log^2 n) rounds, a handful
on star-shaped bucket graphs) to one star per component centred on its smallest node. The functions
here are the per-partition steps over numpy edge arrays ``(lsh_a, lsh_b)`` of uint64 document hashes.
"""

from __future__ import annotations

import numpy as np

A, B = "lsh_a", "lsh_b"


def both_ways(batch: dict) -> dict:
    """Every undirected edge once from each end, so that a node's partition sees all its neighbours."""
    a, b = np.asarray(batch[A], np.uint64), np.asarray(batch[B], np.uint64)
    return {A: np.concatenate([a, b]), B: np.concatenate([b, a])}


def _segments(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, v = np.asarray(batch[A], np.uint64), np.asarray(batch[B], np.uint64)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    start = np.ones(len(u), bool)
    start[1:] = u[1:] != u[:-1]
    return u, v, start


def _segment_min(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Minimum of each run that ``start`` opens, repeated over the run."""
    if not len(values):
        return values
    first = np.flatnonzero(start)
    mins = np.minimum.reduceat(values, first)
    return np.repeat(mins, np.diff(np.append(first, len(values))))


def _unique(a: np.ndarray, b: np.ndarray) -> dict:
    keep = a != b
    if not keep.any():
        return {A: np.zeros(0, np.uint64), B: np.zeros(0, np.uint64)}
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
    return {A: pairs[:, 0].copy(), B: pairs[:, 1].copy()}


def large_star(batch: dict) -> dict:
    """Each node ``u`` links every larger neighbour to the smallest of ``u`` and its neighbours."""
    u, v, start = _segments(batch)
    m = np.minimum(u, _segment_min(v, start))
    larger = v > u
    return _unique(v[larger], m[larger])


def small_star(batch: dict) -> dict:
    """Each node ``u`` links itself and its smaller neighbours to the smallest of them."""
    u, v, start = _segments(batch)
    low = v <= u
    u, v = u[low], v[low]
    start = np.ones(len(u), bool)
    start[1:] = u[1:] != u[:-1]
    m = np.minimum(u, _segment_min(v, start))
    return _unique(np.concatenate([v, u]), np.concatenate([m, m]))


def star_pairs(batch: dict) -> dict:
    """Converged stars ``(leaf, centre)`` to label rows ``lsh_doc -> lsh_comp``, centres labelled as
    themselves (a node may come out of several partitions: :func:`first_label` keeps one)."""
    a, b = np.asarray(batch[A], np.uint64), np.asarray(batch[B], np.uint64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return {"lsh_doc": np.concatenate([hi, lo]), "lsh_comp": np.concatenate([lo, lo])}


def first_label(batch: dict) -> dict:
    """One label per document (the smallest, should a node still carry two)."""
    doc, comp = np.asarray(batch["lsh_doc"], np.uint64), np.asarray(batch["lsh_comp"], np.uint64)
    order = np.lexsort((comp, doc))
    doc, comp = doc[order], comp[order]
    first = np.ones(len(doc), bool)
    first[1:] = doc[1:] != doc[:-1]
    return {"lsh_doc": doc[first], "lsh_comp": comp[first]}


def edge_digest(batch: dict) -> dict:
    """Count and a wrapping sum of mixed edge hashes: equal for equal edge multisets."""
    a, b = np.asarray(batch[A], np.uint64), np.asarray(batch[B], np.uint64)
    mixed = (a * np.uint64(0x9E3779B97F4A7C15)) ^ (b * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(1))
    return {"edges": len(a), "digest": int(mixed.sum(dtype=np.uint64))}


def local_components(a: np.ndarray, b: np.ndarray) -> dict:
    """Labels of every node with an edge, in one process: the component's smallest node hash."""
    from filters.dedup.unionfind import connected_components

    docs, inverse = np.unique(np.concatenate([a, b]).astype(np.uint64), return_inverse=True)
    labels = connected_components(len(docs), inverse[: len(a)], inverse[len(a) :])
    return {"lsh_doc": docs, "lsh_comp": docs[labels]}
