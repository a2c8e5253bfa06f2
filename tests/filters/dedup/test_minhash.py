"""Near-dedup core: shingles, signatures, LSH, verification, clusters, keep rule, cross-run index.

The corpus is real text from this machine with planted near duplicates (bench/planted.py); the
ground truth is exact Jaccard over all pairs (bench/truth.py).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import xxhash

from bench.planted import build_planted_corpus
from bench.truth import exact_pairs, score
from filters.dedup.index import DedupIndex
from filters.dedup.lsh import WINDOW, candidate_pairs, jaccard, keepers, near_dedup
from filters.dedup.minhash import (
    MinHashConfig,
    band_keys,
    band_matrix,
    minhash_bands,
    permutations,
    shingle_hashes,
    signatures,
)
from filters.dedup.stages import (
    ClusterGroup,
    MinHashSignatures,
    assign_components,
    bucket_edges,
    components,
    explode_bands,
)
from filters.dedup.unionfind import UnionFind, connected_components
from generators.text import normalized_words


@pytest.fixture(scope="module")
def corpus():
    return build_planted_corpus(3000, seed=0)


@pytest.fixture(scope="module")
def truth(corpus):
    return exact_pairs(corpus.texts, floor=0.3)


def _reference_shingles(text: str, n: int = 5) -> set[int]:
    """Shingle hashes the slow way: per n-gram polynomial of per-word xxh3, then fmix64."""
    words = normalized_words(text)
    if not words:
        return set()
    wh = [xxhash.xxh3_64_intdigest(w.encode()) for w in words] + [0] * (n - 1)
    out = set()
    for s in range(max(len(words) - n + 1, 1)):
        acc = 0
        for k in range(n):
            acc = (acc * 0x9E3779B97F4A7C15 + wh[s + k]) % 2**64
        for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            acc = ((acc ^ (acc >> 33)) * mult) % 2**64
        out.add(acc ^ (acc >> 33))
    return out


def test_shingles_match_reference_and_normalise():
    texts = ["The quick brown fox jumps over the lazy dog", "", "two words", "ＴＨＥ  quick\tbrown FOX jumps"]
    hashes, offsets = shingle_hashes(texts)
    assert offsets.tolist() == [0, 5, 5, 6, 7]
    for i, t in enumerate(texts):
        assert set(hashes[offsets[i] : offsets[i + 1]].tolist()) == _reference_shingles(t)
    # NFKC folds full-width letters, case and whitespace runs do not matter.
    assert hashes[offsets[3]] == hashes[offsets[0]]


def test_signatures_equal_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 900, 120)
    counts[[3, 50]] = 0
    offsets = np.concatenate(([0], np.cumsum(counts)))
    hashes = rng.integers(0, 2**64, offsets[-1], dtype=np.uint64)
    a, b = permutations(100, seed=1)
    sig = signatures(hashes, offsets, a, b)  # ~54k shingles x 100 perms spans several chunks
    for i in range(len(counts)):
        x = hashes[offsets[i] : offsets[i + 1]] & np.uint64(0xFFFFFFFF)
        want = ((a[:, None] * x[None, :] + b[:, None]) >> np.uint64(32)).min(1) if len(x) else 0xFFFFFFFF
        assert (sig[i] == want).all()


def test_signature_agreement_estimates_jaccard_and_follows_s_curve(corpus, truth):
    cfg = MinHashConfig()
    hashes, offsets = shingle_hashes(corpus.texts)
    sig = signatures(hashes, offsets, *permutations(cfg.num_perm, cfg.seed))
    agree = (sig[truth.i] == sig[truth.j]).mean(axis=1)
    assert abs(float((agree - truth.sim).mean())) < 0.02
    keys = band_keys(sig, cfg.bands, cfg.rows)
    shared = (keys[truth.i] == keys[truth.j]).any(axis=1)
    for lo, hi in [(0.3, 0.45), (0.45, 0.6), (0.6, 0.75)]:
        sel = (truth.sim >= lo) & (truth.sim < hi)
        expected = (1 - (1 - truth.sim[sel] ** cfg.rows) ** cfg.bands).mean()
        assert abs(shared[sel].mean() - expected) < 0.05, (lo, hi)


def test_band_keys_are_per_band():
    sig = np.zeros((2, 6), np.uint32)
    keys = band_keys(sig, bands=3, rows=2)
    assert len(set(keys[0].tolist())) == 3 and (keys[0] == keys[1]).all()


def test_candidate_pairs_window_and_all_pairs():
    keys = np.zeros((100, 1), np.uint64)  # one bucket of 100
    keys[99] = 7
    lo, hi = candidate_pairs(keys, np.arange(100, dtype=np.uint64))
    assert len(lo) == sum(min(WINDOW, 98 - k) for k in range(99)) and 99 not in hi
    lo, hi = candidate_pairs(keys, np.arange(100, dtype=np.uint64), window=None)
    assert len(lo) == 99 * 98 // 2 and (lo < hi).all()


def test_jaccard_matches_python_sets():
    rng = np.random.default_rng(2)
    for _ in range(50):
        a, b = (np.unique(rng.integers(0, 60, rng.integers(0, 40))) for _ in range(2))
        union = len(set(a) | set(b))
        assert jaccard(a, b) == pytest.approx(len(set(a) & set(b)) / union if union else 0.0)


def test_union_find_and_components_agree():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 200))
        a, b = rng.integers(0, n, (2, int(rng.integers(0, 300))))
        uf = UnionFind(n)
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            uf.union(x, y)
        assert (uf.labels() == connected_components(n, a, b)).all()


def test_keep_rule_score_then_id():
    labels = np.array([0, 0, 0, 3, 3, 5])
    ids = np.array(["c", "a", "b", "e", "d", "f"])
    assert keepers(labels, ids, None).tolist() == [1, 1, 1, 4, 4, 5]
    scores = np.array([0.9, 0.1, 0.9, np.nan, 0.2, 0.0])
    assert keepers(labels, ids, scores).tolist() == [2, 2, 2, 4, 4, 5]  # tie 0.9: "b" < "c"


def test_near_dedup_recall_and_no_false_removals(corpus, truth):
    result = near_dedup(corpus.ids, corpus.texts)
    s = score(result.keep, truth)
    assert s.pairs_at_threshold > 300 and s.removed > 300
    assert s.miss_rate <= 0.05
    assert s.false_removals == 0 and s.removed_below_threshold == 0
    removed = np.flatnonzero(~result.keep)
    kept_ids = set(np.asarray(corpus.ids)[result.keep])
    assert all(result.duplicate_of[i] in kept_ids for i in removed)
    assert (result.cluster_id[result.keep] == np.asarray(corpus.ids)[result.keep]).all()


def test_recall_check_can_fail(corpus, truth):
    """datasketch's 9 x 13 banding without verification misses far more than 5% of pairs."""
    plain = MinHashConfig(num_perm=117, bands=9, rows=13, verify=False)
    assert score(near_dedup(corpus.ids, corpus.texts, cfg=plain).keep, truth).miss_rate > 0.05


def test_same_decisions_for_any_row_order(corpus):
    ids, texts = np.asarray(corpus.ids), corpus.texts
    scores = np.random.default_rng(4).random(len(ids)).round(1)  # ties exercise the id rule
    cfg = MinHashConfig(keep_by="score")
    first = near_dedup(ids, texts, scores, cfg)
    perm = np.random.default_rng(5).permutation(len(ids))
    second = near_dedup(ids[perm], [texts[i] for i in perm], scores[perm], cfg)
    assert set(ids[first.keep]) == set(ids[perm][second.keep])
    assert dict(zip(ids, first.cluster_id, strict=True)) == dict(
        zip(ids[perm], second.cluster_id, strict=True)
    )


def test_keep_by_score_inside_a_cluster():
    base = " ".join(f"word{i}" for i in range(200))
    texts = [base, base.replace("word7 ", "seven "), base + " tail", "something else entirely " * 5]
    result = near_dedup(
        ["d", "b", "c", "a"], texts, scores=[0.1, 0.5, 0.9, 0.0], cfg=MinHashConfig(keep_by="score")
    )
    assert result.keep.tolist() == [False, False, True, True]
    assert result.duplicate_of.tolist() == ["c", "c", None, None]
    plain = near_dedup(["d", "b", "c", "a"], texts)
    assert plain.keep.tolist() == [False, True, False, True]


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="num_perm"):
        MinHashConfig(num_perm=128)
    with pytest.raises(ValueError, match="bandz"):
        MinHashConfig.from_dict({"bandz": 3})


def test_cross_run_index(corpus, tmp_path):
    cfg = MinHashConfig(index_dir=str(tmp_path / "index"))
    ids, texts = corpus.ids, corpus.texts
    first = near_dedup(ids[:1500], texts[:1500], cfg=cfg)
    kept = np.flatnonzero(first.keep)
    DedupIndex(cfg).add_run("run1", [ids[i] for i in kept], [texts[i] for i in kept])
    index = DedupIndex(cfg).load()
    assert index.runs() == ["run1"] and len(index) == len(kept)

    # Re-offering run 1's kept texts under new ids: every one is already published.
    again = near_dedup([f"new-{i}" for i in kept], [texts[i] for i in kept], cfg=cfg, index=index)
    assert not again.keep.any()
    assert again.duplicate_of.tolist() == [ids[i] for i in kept]

    second = near_dedup(ids[1500:], texts[1500:], cfg=cfg, index=index)
    assert second.stats["index_matches"] > 50
    both = np.concatenate([first.keep, second.keep])
    truth = exact_pairs(texts, floor=0.5)
    assert score(both, truth).miss_rate <= 0.05 and score(both, truth).false_removals == 0

    with pytest.raises(ValueError, match="already holds run"):
        DedupIndex(cfg).add_run("run1", ["x"], ["y"])
    with pytest.raises(ValueError, match="ngram"):
        DedupIndex(MinHashConfig(index_dir=cfg.index_dir, ngram=3))


def test_ray_stages_without_ray_equal_near_dedup(corpus):
    """The distributed plan, run in-process over uneven batches, decides like near_dedup."""
    n = 1200
    cfg = MinHashConfig(keep_by="score")
    kw = asdict(cfg)
    rows = {
        "id": np.asarray(corpus.ids[:n], dtype=object),
        "text": np.asarray(corpus.texts[:n], dtype=object),
        "score": np.random.default_rng(6).random(n),
        "drop_reason": np.full(n, "", dtype=object),
        "duplicate_of": np.full(n, "", dtype=object),
    }
    cuts = [0, 100, 450, 451, 900, n]
    batches = [{k: v[a:b] for k, v in rows.items()} for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    batches = [MinHashSignatures(**kw)(b) for b in batches]
    got = np.concatenate([band_matrix(b["lsh_bands"], cfg.bands) for b in batches])
    assert (got == minhash_bands(rows["text"], cfg)).all()
    exploded = [explode_bands(b, id_column="id", num_parts=3, **kw) for b in batches]
    flat = {k: np.concatenate([e[k] for e in exploded]) for k in exploded[0]}
    edges = [bucket_edges({k: v[flat["lsh_part"] == p] for k, v in flat.items()}) for p in range(3)]
    docs, comps = components(
        np.concatenate([e["lsh_a"] for e in edges]), np.concatenate([e["lsh_b"] for e in edges])
    )
    tagged = [assign_components(b, docs, comps, id_column="id", num_parts=2) for b in batches]
    table = {k: np.concatenate([t[k] for t in tagged]) for k in tagged[0]}
    decided = {}
    for part in range(2):
        group = {k: v[table["lsh_part"] == part] for k, v in table.items()}
        out = ClusterGroup(**kw)(group)
        decided.update(zip(out["id"], out["drop_reason"], strict=True))
    ref = near_dedup(rows["id"], rows["text"], rows["score"], cfg)
    removed = {i for i, k in zip(rows["id"], ref.keep, strict=True) if not k}
    assert {i for i, r in decided.items() if r == "near_duplicate"} == removed


def test_empty_texts_are_never_duplicates_and_columns_are_checked():
    result = near_dedup(["a", "b", "c", "d"], ["", "   ", "short text", "short text"])
    assert result.keep.tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="text_column='body'"):
        MinHashSignatures(text_column="body")({"text": np.array(["x"], dtype=object)})
