"""`dedup.decontaminate` through a run: planted evaluation overlap is dropped and named, the rest kept."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_litho_dedup_drops_rows_that_overlap_an_evaluation_set(ray_session, tmp_path, real_texts):
    from pipeline.run import run

    evals = tmp_path / "eval.jsonl"
    evals.write_text(
        "".join(json.dumps({"question": " ".join(t.split()[:40])}) + "\n" for t in real_texts[:3])
    )
    docs = [" ".join(t.split()[:150]) for t in real_texts[5:11]]
    docs.append("Background first. " + " ".join(real_texts[1].split()[10:30]) + " That is all.")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d, "n": i}) + "\n" for i, d in enumerate(docs)))
    setting = f"dedup.decontaminate={{sets: [{{path: {evals}, columns: [question]}}]}}"
    manifest = run(
        compose(f"input={corpus}", f"output.dir={tmp_path / 'out'}", setting, config_name="dedup_corpus"),
        "dedup",
    )
    rejected = _rows(tmp_path / "out" / "rejected")
    assert manifest["dropped_by_reason"] == {"contaminated": 1}
    assert [(r["n"], r["contaminated_by"]) for r in rejected] == [(6, "eval:1")]
    assert [s["name"] for s in manifest["stages"]][:1] == ["decontaminate"] and manifest["counts"][
        "kept"
    ] == 6
