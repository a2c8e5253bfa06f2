"""Disjoint sets for duplicate clusters: a sequential union-find for verified edges and a vectorised
connected-components pass for the (larger) candidate-edge graph that the Ray driver clusters.

Both give labels that depend only on the edge set, not on its order: a label is the smallest member
index of its component, which keeps dedup decisions deterministic across worker counts.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Union-find with path halving over ``0..n-1`` (Tarjan 1975, "Efficiency of a good but not
    linear set union algorithm"); the smaller root wins a union, so roots are component minima.

    Args:
        n: Number of elements.
    """

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> int:
        """Join the sets of ``x`` and ``y``; returns the surviving root."""
        rx, ry = self.find(x), self.find(y)
        if rx > ry:
            rx, ry = ry, rx
        self.parent[ry] = rx
        return rx

    def labels(self) -> np.ndarray:
        """Root of every element (the smallest index of its set)."""
        return np.fromiter((self.find(x) for x in range(len(self.parent))), np.int64, len(self.parent))


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (smallest member index) of ``0..n-1`` under undirected edges ``a[k]-b[k]``.

    Min-label hooking with pointer jumping (Shiloach & Vishkin 1982): every round each vertex adopts
    the smallest label among its edges, then labels are shortcut to their roots. Rounds grow with
    the log of component diameter; each round is a few numpy passes over the edges, so millions of
    candidate edges cluster in seconds without a Python loop per edge.
    """
    label = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        new = label.copy()
        # Hook the labels (roots), not just the endpoints, so whole trees merge per round.
        np.minimum.at(new, la, low)
        np.minimum.at(new, lb, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new
