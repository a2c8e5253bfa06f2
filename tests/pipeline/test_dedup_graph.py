"""Near dedup on Ray Data: same decisions as the in-memory step on 1 or 2 workers, other rows
untouched, and the cross-run index written and read through Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from bench.planted import build_planted_corpus
from bench.truth import exact_pairs, score
from filters.dedup.lsh import near_dedup
from filters.dedup.minhash import MinHashConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_dedup(ray_session):
    return ray_session


@pytest.fixture(scope="module")
def rows():
    corpus = build_planted_corpus(1500, seed=3)
    rng = np.random.default_rng(0)
    n = len(corpus.ids)
    reasons = np.where(rng.random(n) < 0.05, "too_short", "")
    return {
        "id": corpus.ids,
        "text": corpus.texts,
        "score": rng.random(n).round(1),
        "drop_reason": reasons.tolist(),
        "duplicate_of": np.where(reasons == "", "", "someone").tolist(),
    }


def _run(ray, rows, cfg, concurrency, blocks):
    from pipeline.near_dedup import near_dedup_dataset

    ds = ray.data.from_arrow(pa.table(rows)).repartition(blocks)
    return near_dedup_dataset(ds, cfg, concurrency=concurrency).to_pandas().set_index("id")


def test_same_decisions_as_in_memory_on_one_and_two_workers(ray_dedup, rows):
    cfg = MinHashConfig(keep_by="score")
    active = np.flatnonzero(np.asarray(rows["drop_reason"]) == "")
    ids = np.asarray(rows["id"])[active]
    ref = near_dedup(ids, [rows["text"][i] for i in active], rows["score"][active], cfg)
    outs = [_run(ray_dedup, rows, cfg, concurrency=c, blocks=b) for c, b in ((1, 3), (2, 7))]
    for out in outs:
        assert len(out) == len(rows["id"]) and "lsh_bands" not in out.columns
        assert set(out.index[out.drop_reason == ""]) == set(ids[ref.keep])
        assert (out.loc[ids, "cluster_id"].to_numpy() == ref.cluster_id.astype(str)).all()
        removed = out[out.drop_reason == "near_duplicate"]
        assert (out.loc[removed.duplicate_of, "drop_reason"] == "").all()
        untouched = out[out.drop_reason == "too_short"]
        assert (untouched.duplicate_of == "someone").all() and (untouched.cluster_id == "").all()
    truth = exact_pairs([rows["text"][i] for i in active])
    s = score(outs[1].loc[ids, "drop_reason"].to_numpy() == "", truth)
    assert s.miss_rate <= 0.05 and s.false_removals == 0


def test_cross_run_index_through_ray(ray_dedup, rows, tmp_path):
    from pipeline.near_dedup import near_dedup_dataset, write_dedup_index

    cfg = MinHashConfig(index_dir=str(tmp_path / "index"))
    half = len(rows["id"]) // 2
    first = {k: v[:half] for k, v in rows.items()}
    out1 = _run(ray_dedup, first, cfg, concurrency=2, blocks=4)
    kept1 = out1[out1.drop_reason == ""].reset_index()
    write_dedup_index(ray_dedup.data.from_pandas(kept1), cfg, run_id="run1")

    # Run 2 offers run 1's kept texts again (new ids) plus the rest of the corpus.
    second = {k: list(v[half:]) for k, v in rows.items()}
    second["id"] += [f"again-{i}" for i in kept1.id]
    second["text"] += kept1.text.tolist()
    second["score"] = np.concatenate([rows["score"][half:], kept1.score])
    second["drop_reason"] += [""] * len(kept1)
    second["duplicate_of"] += [""] * len(kept1)
    out2 = near_dedup_dataset(ray_dedup.data.from_arrow(pa.table(second)), cfg).to_pandas().set_index("id")
    again = out2.loc[[f"again-{i}" for i in kept1.id]]
    assert (again.drop_reason == "near_duplicate").all()
    assert (again.duplicate_of.to_numpy() == kept1.id.to_numpy()).all()
    fresh = out2.drop(index=again.index)
    assert set(fresh.drop_reason) <= {"", "near_duplicate", "too_short"}
    assert (
        fresh.duplicate_of[fresh.drop_reason == "near_duplicate"].isin(set(kept1.id) | set(fresh.index)).all()
    )


def test_star_rounds_and_join_give_the_same_decisions(ray_dedup, rows, monkeypatch):
    """Components by partitioned star rounds (no task holds all edges), labels joined by id hash
    (no task holds all labels) and every groupby as a hash shuffle decide exactly as the one-task /
    broadcast path. Over 30 s: the shuffled path starts Ray Data's aggregator actors for each of its
    groupbys and star rounds, which is what it tests."""
    from pipeline import partition
    from pipeline.near_dedup import near_dedup_dataset

    cfg = MinHashConfig(keep_by="score")
    ds = ray_dedup.data.from_arrow(pa.table(rows)).repartition(5)
    small = near_dedup_dataset(ds, cfg).to_pandas().set_index("id").sort_index()
    monkeypatch.setattr(partition, "ONE_TASK_ROWS", 0)  # the cluster-scale path: hash shuffles
    big = (
        near_dedup_dataset(ds, cfg, local_edges=0, broadcast_docs=0).to_pandas().set_index("id").sort_index()
    )
    assert (small.drop_reason == "near_duplicate").sum() > 20
    for column in ("drop_reason", "cluster_id", "duplicate_of"):
        assert (small[column] == big.loc[small.index, column]).all(), column
