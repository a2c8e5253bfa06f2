"""Seed corpora: Parquet, JSONL and save_to_disk directories; chunking at sentence ends."""

from __future__ import annotations

import json

import pytest

from generators.errors import ConfigError
from generators.prompts.seeds import chunk_text, load_seeds


def test_chunks_end_at_sentences_and_respect_the_limit(real_texts):
    text = real_texts[-1]
    chunks = chunk_text(text, 60)
    assert " ".join(chunks).split() == text.split()
    assert all(len(c.split()) <= 60 for c in chunks)
    assert sum(c.rstrip().endswith((".", "!", "?")) for c in chunks[:-1]) >= len(chunks[:-1]) // 2


def test_a_sentence_longer_than_the_limit_is_cut_at_words():
    assert chunk_text("one two three four five. six", 2) == ["one two", "three four", "five. six"]


def test_jsonl_and_saved_dataset_give_the_same_seeds(tmp_path, real_texts):
    datasets = pytest.importorskip("datasets")
    records = [{"content": t, "key": f"k{i}"} for i, t in enumerate(real_texts[:3])]
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}).save_to_disk(str(saved))

    a = load_seeds(str(jsonl), "content", "key", max_words=80)
    b = load_seeds(str(saved), "content", "key", max_words=80)
    assert [(s.source_row, s.source_id, s.source_chunk, s.text) for s in a] == [
        (s.source_row, s.source_id, s.source_chunk, s.text) for s in b
    ]
    assert a[0].source_file == str(jsonl) and b[0].source_file == str(saved)
    assert {s.source_id for s in a} == {"k0", "k1", "k2"}
    with pytest.raises(ConfigError, match="generator.seed_split=test"):
        load_seeds(str(saved), "content", split="test")


def test_short_texts_are_skipped_and_max_docs_bounds_the_read(tmp_path, real_texts):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["too short", *real_texts[:5]]))
    seeds = load_seeds(str(path), max_docs=2, min_words=30)
    assert {s.source_row for s in seeds} == {1}
    with pytest.raises(ConfigError, match="no text of at least"):
        load_seeds(str(path), max_docs=1)


def test_repeated_chunks_become_one_seed_so_plan_ids_stay_unique(tmp_path, real_texts):
    from generators.prompts.dense import DenseGenerator

    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in [real_texts[0], real_texts[1], real_texts[0]]))
    seeds = load_seeds(str(path), max_words=80)
    assert len({s.text for s in seeds}) == len(seeds) and {s.source_row for s in seeds} == {0, 1}
    rows = DenseGenerator(seed_file=str(path), max_words=80).plan(3 * len(seeds), seed=0)
    assert len({r["id"] for r in rows}) == len(rows)
