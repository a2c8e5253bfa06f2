"""End-to-end runs on Ray with the dummy teacher: accounting, shards, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from generators.text import normalize
from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow


def _run(tmp: Path, *overrides: str) -> dict:
    from pipeline.run import run

    # The LM scorer has its own tests; orchestration tests skip its model load and forward passes.
    return run(compose("teacher=dummy", "filters.lm=null", f"output.dir={tmp}", *overrides))


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_every_row_is_accounted_for(ray_session, tmp_path):
    manifest = _run(
        tmp_path,
        "n=80",
        "teacher.error_rate=0.1",
        "teacher.truncate_rate=0.1",
        "teacher.duplicate_rate=0.15",
        "filters.truncated=drop",
        "output.validation_fraction=0.2",
    )
    counts, reasons = manifest["counts"], manifest["dropped_by_reason"]
    assert counts["planned"] == 80 == counts["rows_in"] == counts["kept"] + counts["dropped"]
    assert {"teacher_error", "truncated", "exact_duplicate"} <= set(reasons)
    assert counts["teacher_errors"] == reasons["teacher_error"]
    stages = {s["name"]: s for s in manifest["stages"]}
    assert list(stages)[:5] == ["clean", "length", "token_metrics", "rule_scores", "sanity"]
    assert stages["sanity"]["dropped"]["teacher_error"] == reasons["teacher_error"]
    assert stages["exact_dedup"]["dropped"] == {"exact_duplicate": reasons["exact_duplicate"]}
    by_stage = {}
    for stage in manifest["stages"]:  # every drop counted once, under the stage that made it
        for reason, n in stage["dropped"].items():
            by_stage[reason] = by_stage.get(reason, 0) + n
    assert by_stage == reasons
    rows_in = [s["rows_in"] for s in manifest["stages"]]
    drops = [sum(s["dropped"].values()) for s in manifest["stages"]]
    assert rows_in[0] == 80 and all(b == a - d for a, b, d in zip(rows_in, rows_in[1:], drops))
    assert stages["token_metrics"]["seconds"] > 0 and stages["token_metrics"]["version"] == "token_metrics_v2"

    kept = _rows(tmp_path / "data")
    rejected = _rows(tmp_path / "rejected")
    assert len(kept) == counts["kept"] == sum(s["rows"] for s in manifest["shards"])
    assert len(rejected) == counts["dropped"]
    assert {s["split"] for s in manifest["shards"]} == {"train", "validation"}
    assert len({r["id"] for r in kept + rejected}) == 80
    assert len({normalize(r["text"]) for r in kept}) == len(kept)
    assert all(
        r["duplicate_of"] in {k["id"] for k in kept}
        for r in rejected
        if r["drop_reason"] == "exact_duplicate"
    )
    assert manifest["tokens"]["kept_target_tokens"] == sum(r["n_tokens"] for r in kept)
    assert set(kept[0]) >= {
        "id",
        "text",
        "topic",
        "format",
        "audience",
        "teacher",
        "sampling",
        "n_tokens",
        "chars_per_token",
        "bytes_per_token",
        "fertility",
    }
    assert "drop_reason" not in kept[0]
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.n == 80 and saved.teacher._target_ == "generators.teachers.dummy.DummyTeacher"
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == counts

    from datasets import load_dataset

    loaded = load_dataset("parquet", data_dir=str(tmp_path / "data"))
    assert sum(len(split) for split in loaded.values()) == counts["kept"]


def test_rerun_reuses_generations_and_rewrites_nothing(ray_session, tmp_path):
    first = _run(tmp_path, "n=30", "teacher.duplicate_rate=0.1")
    shard = tmp_path / "data" / first["shards"][0]["file"]
    mtime = shard.stat().st_mtime_ns
    second = _run(tmp_path, "n=30", "teacher.duplicate_rate=0.1")
    assert second["counts"]["reused"] == 30 and second["counts"]["generated"] == 0
    assert second["shards_unchanged"] and shard.stat().st_mtime_ns == mtime
    assert second["counts"]["kept"] == first["counts"]["kept"]


def test_interrupted_run_resumes_only_missing_batches(ray_session, tmp_path):
    groups = ("n=40", "cluster.teacher_batch_size=10", "teacher.checkpoint_rows=10")
    _run(tmp_path, *groups)
    checkpoints = sorted((tmp_path / ".litho" / "generations").glob("*/block=000000/gen-*.parquet"))
    # One file per checkpoint group of at most 10 rows (a group also closes when its batch is answered).
    assert len(checkpoints) >= 4 and all(pq.read_metadata(p).num_rows <= 10 for p in checkpoints)
    lost = sum(pq.read_metadata(p).num_rows for p in checkpoints[:2])
    for path in checkpoints[:2]:  # as if the run died before these batches finished
        path.unlink()
    manifest = _run(tmp_path, *groups)
    assert manifest["counts"]["generated"] == lost and manifest["counts"]["reused"] == 40 - lost
    ids = [r["id"] for r in _rows(tmp_path / "data")]
    assert len(ids) == len(set(ids)) == manifest["counts"]["kept"]


def test_growing_the_plan_generates_only_new_requests(ray_session, tmp_path):
    _run(tmp_path, "n=20")
    manifest = _run(tmp_path, "n=35")
    assert manifest["counts"]["reused"] == 20 and manifest["counts"]["generated"] == 15
    ids = [r["id"] for r in _rows(tmp_path / "data")]
    assert len(ids) == len(set(ids)) == 35


def test_another_teacher_does_not_reuse_texts(ray_session, tmp_path):
    _run(tmp_path, "n=10")
    manifest = _run(tmp_path, "n=10", "teacher.words=60")
    assert manifest["counts"]["generated"] == 10
    assert len(list((tmp_path / ".litho" / "generations").iterdir())) == 2


def test_cross_run_index_blocks_earlier_texts_but_not_a_rerun(ray_session, tmp_path):
    index = tmp_path / "index"
    near = ("dedup=minhash", f"dedup.minhash.index_dir={index}")
    first = _run(tmp_path / "a", "n=12", *near)
    assert first["counts"]["kept"] == 12
    again = _run(tmp_path / "a", "n=12", *near)  # the same output dir: its own index entry is replaced
    assert again["counts"]["kept"] == 12
    other = _run(tmp_path / "b", "n=12", *near)  # same texts into a new dir: all seen in an earlier run
    assert other["counts"]["kept"] == 0 and other["dropped_by_reason"] == {"near_duplicate": 12}


def test_exact_dedup_by_reference_and_by_shuffled_rows_write_the_same_shards(
    ray_session, tmp_path, monkeypatch
):
    """Over 30 s: two runs, the second with every groupby a hash shuffle, which starts Ray Data's aggregator
    actors: the cluster-scale path is what it tests."""
    from pipeline import partition, process

    overrides = ("n=40", "teacher.duplicate_rate=0.3", "output.rows_per_shard=9")
    _run(tmp_path / "refs", *overrides)
    monkeypatch.setattr(process, "BROADCAST_DUPLICATES", 0)  # every duplicate above the limit: rows shuffled
    monkeypatch.setattr(partition, "ONE_TASK_ROWS", 0)  # and every groupby a hash shuffle, as at scale
    manifest = _run(tmp_path / "rows", *overrides)
    assert manifest["dropped_by_reason"]["exact_duplicate"] >= 5

    def digests(out: Path) -> dict:
        return {
            f"{f.parent.name}/{f.name}": f.read_bytes()
            for d in ("data", "rejected")
            for f in sorted((out / d).glob("*.parquet"))
        }

    assert digests(tmp_path / "refs") == digests(tmp_path / "rows") != {}
