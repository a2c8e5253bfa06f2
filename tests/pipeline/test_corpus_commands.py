"""`litho score` and `litho dedup` over corpora litho did not generate."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_score_keeps_input_columns_and_adds_scores(ray_session, tmp_path, real_texts):
    texts = [" ".join(t.split()[:120]) for t in real_texts[:6]] + ["tiny", "word " * 200]
    corpus = tmp_path / "in.jsonl"
    corpus.write_text(
        "".join(json.dumps({"doc": f"d{i}", "body": t, "lang": "en"}) + "\n" for i, t in enumerate(texts))
    )
    from pipeline.run import run

    out = tmp_path / "scored"
    manifest = run(
        compose(
            f"input={corpus}",
            f"output.dir={out}",
            "text_column=body",
            "id_column=doc",
            "filters.lm.max_len=128",
            "filters.lm.layer_groups=0",
            config_name="score",
        ),
        "score",
    )
    kept, rejected = _rows(out / "data"), _rows(out / "rejected")
    assert len(kept) + len(rejected) == 8 == manifest["counts"]["rows_in"]
    assert {r["drop_reason"] for r in rejected} >= {"too_short", "top_2_gram"}  # "word word ...": Gopher
    row = kept[0]
    assert {
        "doc",
        "body",
        "lang",
        "source_file",
        "source_row",
        "n_tokens",
        "fertility",
        "gzip_ratio",
        "bits_per_byte_v1",
        "attn_density_v1",
    } <= set(row)
    by_doc = {r["doc"]: r for r in kept}
    assert all(by_doc[f"d{i}"]["body"] == texts[i] for i in range(6) if f"d{i}" in by_doc)  # text untouched
    assert 0 < row["bits_per_byte_v1"] < 8
    assert "lm_scores_v1" in manifest["score_versions"]


def test_dedup_removes_planted_near_duplicates(ray_session, tmp_path, real_texts):
    originals = [" ".join(t.split()[:200]) for t in real_texts[:10]]
    edited = []
    for text in originals[:4]:  # one word in 80 changed: Jaccard of 5-gram shingles about 0.88
        words = text.split()
        edited.append(" ".join("CHANGED" if i % 80 == 7 else w for i, w in enumerate(words)))
    rows = [{"text": t, "origin": "orig", "n": i} for i, t in enumerate(originals)]
    rows += [{"text": t, "origin": "edit", "n": 100 + i} for i, t in enumerate(edited)]
    rows += [{"text": originals[5], "origin": "copy", "n": 105}]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:7]), corpus / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[7:]), corpus / "b.parquet")
    from pipeline.run import run

    out = tmp_path / "deduped"
    manifest = run(compose(f"input={corpus}", f"output.dir={out}", config_name="dedup_corpus"), "dedup")
    kept, rejected = _rows(out / "data"), _rows(out / "rejected")
    assert len(kept) == 10 and len(rejected) == 5
    assert manifest["dropped_by_reason"] == {"exact_duplicate": 1, "near_duplicate": 4}
    kept_ids = {r["id"] for r in kept}
    assert all(r["duplicate_of"] in kept_ids for r in rejected)
    assert {"text", "origin", "n", "source_file", "source_row"} <= set(kept[0])
    assert sorted(r["n"] % 100 for r in kept) == list(range(10))  # one text of each planted pair survives
