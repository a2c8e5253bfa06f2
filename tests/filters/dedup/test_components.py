"""Large-star / small-star rounds over hash partitions label components as union-find does."""

from __future__ import annotations

import numpy as np
import pytest

from filters.dedup import components as cc


def _partitioned(edges: dict, step, parts: int) -> dict:
    both = cc.both_ways(edges)
    out = [step({k: v[both[cc.A] % np.uint64(parts) == p] for k, v in both.items()}) for p in range(parts)]
    return {k: np.concatenate([o[k] for o in out]) for k in (cc.A, cc.B)}


def _labels(edges: dict, parts: int) -> dict:
    seen, rounds = None, 0
    while True:
        edges = _partitioned(edges, cc.large_star, parts)
        edges = _partitioned(edges, cc.small_star, parts)
        rounds += 1
        digest = cc.edge_digest(edges)
        if digest == seen:
            break
        seen = digest
    pairs = cc.star_pairs(edges)
    out = [
        cc.first_label({k: v[pairs["lsh_doc"] % np.uint64(parts) == p] for k, v in pairs.items()})
        for p in range(parts)
    ]
    return dict(
        zip(
            np.concatenate([o["lsh_doc"] for o in out]).tolist(),
            np.concatenate([o["lsh_comp"] for o in out]).tolist(),
        )
    ), rounds


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_equal_local_components(seed):
    rng = np.random.default_rng(seed)
    nodes = np.unique(rng.integers(0, 2**63, size=400, dtype=np.uint64))[:300]
    # chains, stars and random edges: long paths are the hard case for label propagation
    chain = rng.permutation(nodes[:120])
    a = np.concatenate([chain[:-1], np.repeat(nodes[120], 40), rng.choice(nodes[160:], 80)])
    b = np.concatenate([chain[1:], nodes[121:161], rng.choice(nodes[160:], 80)])
    edges = {cc.A: a.astype(np.uint64), cc.B: b.astype(np.uint64)}
    labels, rounds = _labels(edges, parts=4)
    ref = cc.local_components(a.astype(np.uint64), b.astype(np.uint64))
    assert labels == dict(zip(ref["lsh_doc"].tolist(), ref["lsh_comp"].tolist()))
    assert rounds < 20
    # every component's label is its smallest member
    for doc, comp in labels.items():
        assert comp <= doc


def test_edge_digest_ignores_order():
    a, b = np.array([1, 2, 3], np.uint64), np.array([4, 5, 6], np.uint64)
    assert cc.edge_digest({cc.A: a, cc.B: b}) == cc.edge_digest({cc.A: a[::-1], cc.B: b[::-1]})
    assert cc.edge_digest({cc.A: a, cc.B: b}) != cc.edge_digest({cc.A: b, cc.B: a})
