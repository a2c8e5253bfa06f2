"""Every new generator end to end with the real embedded teacher (SmolLM2-135M-Instruct), kept tiny."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.rules.rule_sets import RULE_SETS
from tests.pipeline.conftest import compose

REPETITION = {rule.reason for rule in RULE_SETS["gopher_repetition"]}  # the default rule set's drop reasons

pytestmark = pytest.mark.slow

# Small and fast: 4 requests, 64 new tokens, one teacher batch; the LM scorer off (not under test).
REAL = (
    "n=4",
    "teacher.sampling.max_new_tokens=64",
    "teacher.batch_size=4",
    "cluster.teacher_batch_size=4",
    "filters.min_words=5",
    "++filters.lm=null",
)


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory, real_texts) -> Path:
    """Man-page prose (the last real texts) as a Parquet seed corpus with an id column."""
    path = tmp_path_factory.mktemp("seeds") / "seeds.parquet"
    texts = real_texts[-6:]
    pq.write_table(pa.table({"body": texts, "doc_id": [f"man-{i}" for i in range(len(texts))]}), path)
    return path


def _run(out: Path, *overrides: str) -> tuple[dict, list[dict]]:
    from pipeline.run import run

    manifest = run(compose(*REAL, f"output.dir={out}", *overrides))
    rows = [
        r
        for folder in ("data", "rejected")
        for f in sorted((out / folder).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    assert manifest["counts"]["planned"] == 4 == len(rows) + manifest["counts"]["teacher_errors"]
    return manifest, rows


def _prose(text: str) -> bool:
    words = text.split()
    return len(words) >= 3 and sum(any(c.isalpha() for c in w) for w in words) / len(words) > 0.5


def test_rephrase_keeps_the_link_to_its_source(ray_session, tmp_path, seed_file):
    _, rows = _run(
        tmp_path,
        "generator=rephrase",
        f"generator.seed_file={seed_file}",
        "generator.text_column=body",
        "generator.id_column=doc_id",
        "generator.max_words=80",
    )
    for row in rows:
        assert row["teacher"] == "embedded:smollm2" and row["completion_tokens"] > 0
        assert row["source_file"] == str(seed_file) and row["source_id"] == f"man-{row['source_row']}"
        assert row["source_sha256"] == hashlib.sha256(row["source_text"].encode()).hexdigest()
        assert row["style"] in {"encyclopedic", "qa", "dense_notes", "simple"}
    assert any(_prose(r["text"]) for r in rows)


def test_instruct_writes_conversations_for_sft(ray_session, tmp_path):
    """Over 30 s: the real embedded teacher writes two steps per request (the user turn, then the answer);
    the real teacher's conversations are what it tests."""
    manifest, rows = _run(tmp_path, "generator=instruct", "output=sft", "generator.kinds=[question]")
    for row in rows:
        messages = row["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"][: len(messages)]
        assert row["text"] == "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        # A row whose user turn did not parse has no turns and no text: the empty rule names it first.
        dropped = row.get("drop_reason") in ("incomplete_conversation", "empty")
        assert len(json.loads(row["steps"])) == 2 or dropped
    complete = [r for r in rows if r["n_turns"] == 1]
    assert complete and all(_prose(r["messages"][1]["content"]) for r in complete)
    assert manifest["counts"]["teacher_errors"] == 0


def test_dense_reports_token_savings_and_key_terms(ray_session, tmp_path, seed_file):
    manifest, rows = _run(
        tmp_path,
        "generator=dense",
        f"generator.seed_file={seed_file}",
        "generator.text_column=body",
        "generator.max_words=80",
    )
    for row in rows:
        assert row["source_tokens"] > 0 and 0.0 <= row["key_term_recall"] <= 1.0
        if row.get("drop_reason", "") == "":
            assert row["tokens_saved"] >= 1 and row["key_term_recall"] >= 0.8 and row["copied_frac"] <= 0.9
    assert set(manifest["dropped_by_reason"]) <= {
        "dense_not_shorter",
        "dense_copied",
        "dense_lost_key_terms",
        "too_short",
        *REPETITION,
        "empty",
        "exact_duplicate",
    }


def test_layered_parses_layers_of_seed_texts(ray_session, tmp_path, seed_file):
    """Over 30 s on one core: the real embedded teacher writes each layer (terms, then claims) as its own
    step; that its real output parses into layers is what it tests."""
    _, rows = _run(
        tmp_path,
        "generator=layered",
        f"generator.seed_file={seed_file}",
        "generator.text_column=body",
        "generator.layers=[terms,claims]",
        "generator.inline=after",
        "generator.max_words=60",
    )
    parsed = [r for r in rows if r["layer_terms"]]
    assert parsed, [r["steps"] for r in rows]
    for row in parsed:
        assert all(term.lower() in row["body"].lower() for term in row["layer_terms"])
        assert "<terms>\n" + "\n".join(row["layer_terms"]) + "\n</terms>" in row["text"]
    # An unparsed row is never kept; a filter that runs earlier (Gopher repetition, too_short) may name it first.
    unparsed = [r for r in rows if not r["layer_terms"]]
    assert all(r["drop_reason"] for r in unparsed), [r["drop_reason"] for r in unparsed]
    earlier = {"layers_unparsed", *REPETITION, "too_short", "empty", "truncated", "exact_duplicate"}
    assert {r["drop_reason"] for r in unparsed} <= earlier
