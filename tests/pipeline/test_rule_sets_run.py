"""The four published rule sets through `litho score` (issue 22): every row ends as datatrove decides it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from bench.datatrove_rules import decide, reference
from bench.man_pages import rendered_man_pages
from filters.rules.rule_sets import RULE_SETS
from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow
SETS = list(RULE_SETS)  # gopher_repetition, gopher_quality, c4, fineweb


def test_score_runs_every_rule_set_and_drops_as_datatrove(ray_session, tmp_path, real_texts):
    """About 30 s on two busy cores: one small `litho score` run, its actors loading the tokenizer and spaCy."""
    pytest.importorskip("datatrove")
    texts = rendered_man_pages(40)[:8] + real_texts[:4] + ["Hello there. " * 60, "x " * 300]
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"doc": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    from pipeline.run import run

    out = tmp_path / "scored"
    overrides = [f"input={corpus}", f"output.dir={out}", "id_column=doc", "filters.lm=null"]
    manifest = run(compose(*overrides, f"filters.rule_sets=[{','.join(SETS)}]", config_name="score"), "score")

    rows = [
        r
        for part in ("data", "rejected")
        for f in (out / part).glob("*.parquet")
        for r in pq.read_table(f).to_pylist()
    ]
    assert len(rows) == len(texts)
    for row in rows:
        text = texts[int(row["doc"][1:])]
        if row.get("drop_reason") in ("empty", "too_short"):  # litho's own sanity rule, before the sets
            continue
        # datatrove's filters one after another, each on the text as it came (litho never rewrites a text)
        expected = next((r for r in (decide(reference(s), text) for s in SETS) if r), "")
        assert row.get("drop_reason", "") == expected, (row["doc"], row.get("drop_reason"), expected)
    names = [s["name"] for s in manifest["stages"]]
    assert names[names.index("sanity") + 1 :][:4] == SETS
    assert {"repetition_v2", "gopher_quality_v1", "c4_v1", "fineweb_v1"} <= set(manifest["score_versions"])
    shard = next((out / "rejected").glob("*.parquet"))
    assert json.loads(pq.read_schema(shard).metadata[b"litho"])["scores"] == manifest["score_versions"]
    assert {"rep_top_ngram_frac_2", "gopher_stop_words", "c4_sentences", "fineweb_list_ratio"} <= set(rows[0])
    assert len({r.get("drop_reason", "") for r in rows}) >= 3  # kept rows and at least two rules' drops
