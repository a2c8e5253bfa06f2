"""The probe's inputs: real text from this machine, the held-out split, pools and decontamination."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from pipeline.probe import corpus, pool


def test_roff_to_text_keeps_the_words_and_drops_the_markup():
    source = "\n".join(
        [
            ".TH GZIP 1 local",
            '.\\" a comment',
            ".SH NAME",
            "gzip \\- compress files",
            ".SH DESCRIPTION",
            "The",
            ".B gzip",
            "command reduces the size of",
            '.BR "\\&.gz" ,',
            "files \\(em see",
            ".IR zcat (1).",
            ".PP",
            "It uses \\fBLempel-Ziv\\fR coding.",
        ]
    )
    assert corpus.roff_to_text(source) == (
        "Name\n\ngzip - compress files\n\nDescription\n\n"
        "The gzip command reduces the size of .gz, files — see zcat(1).\n\nIt uses Lempel-Ziv coding."
    )


def test_passages_are_whole_paragraphs_within_bounds():
    text = "\n\n".join(f"Paragraph {i} " + "word " * (40 * (i % 5 + 1)) for i in range(30))
    out = corpus.passages(text, max_chars=1200, min_chars=300)
    assert all(300 <= len(p) <= 1200 for p in out)
    assert all(p.startswith("Paragraph") for p in out)
    joined = " ".join(" ".join(out).split())
    assert joined.count("Paragraph") >= 25  # only short leftovers are dropped


def test_eval_and_pool_sides_never_share_a_document():
    pool_keys = {d["key"].split("#")[0] for d in corpus.documents("pydoc", "pool")}
    eval_keys = {d["key"].split("#")[0] for d in corpus.documents("pydoc", "eval")}
    assert pool_keys and eval_keys and not pool_keys & eval_keys
    share = len(eval_keys) / (len(eval_keys) + len(pool_keys))
    assert 0.1 < share < 0.35  # about HELD_OUT_PERCENT of the topics
    assert all(corpus.held_out(k) for k in eval_keys)


def test_builtin_pool_rows_mix_sources_and_respect_the_cap():
    rows = corpus.pool_rows(["pydoc", "doc"], 60_000)
    assert {r["source"] for r in rows} == {"pydoc", "doc"}
    assert 60_000 <= sum(len(r["text"]) for r in rows) < 60_000 + 2 * 2500
    assert not any(corpus.held_out(r["key"].split("#")[0]) for r in rows)


def test_contaminated_rows_share_a_long_ngram_with_eval_text(real_texts):
    evals = {"a": [real_texts[0]]}
    words = real_texts[0].split()
    copied = "Some new words here. " + " ".join(words[40:60]) + " and more words after it."
    short = "Some new words here. " + " ".join(words[40:50]) + " and more words after it."
    flags = pool.contaminated([copied, short, real_texts[1]], evals, n=13)
    assert list(flags) == [True, False, False]
    assert not pool.contaminated([copied], evals, n=0).any()


def _write_pool(root, rows_kept, rows_dropped):
    (root / "data").mkdir(parents=True)
    (root / "rejected").mkdir()
    pq.write_table(pa.Table.from_pylist(rows_kept), root / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows_dropped), root / "rejected" / "rejected-00000-of-00001.parquet")


def test_a_litho_output_dir_reads_kept_rows_or_all_rows(tmp_path):
    kept = [{"text": f"kept {i}", "drop_reason": "", "score": float(i), "domain": "x"} for i in range(4)]
    dropped = [{"text": "junk", "drop_reason": "too_short", "score": None, "domain": "y", "duplicate_of": ""}]
    _write_pool(tmp_path, kept, dropped)
    only_kept = pool.read_pool(pool.pool_files(str(tmp_path), "kept"), "text")
    assert len(only_kept.texts) == 4 and only_kept.group_column == "domain"
    everything = pool.read_pool(pool.pool_files(str(tmp_path), "all"), "text")
    assert len(everything.texts) == 5
    assert np.isnan(everything.columns["score"][4]) and everything.drop_reason[4] == "too_short"
    keep = pool.filters_mask(everything, {"score": {"min": 1.0}}, None)
    assert list(keep) == [False, True, True, True, False]
    band = pool.filters_mask(everything, None, {"score": [0.0, 0.5]})
    assert list(band) == [True, True, False, False, False]


def test_bad_pools_fail_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="pool=/no/such: no such file or directory"):
        pool.pool_files("/no/such")
    with pytest.raises(ConfigError, match="pool_rows=some: use kept"):
        pool.pool_files(str(tmp_path), "some")
    corpus_file = tmp_path / "c.jsonl"
    corpus_file.write_text(json.dumps({"body": "x", "s": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="text_column=text: no such column in the pool"):
        pool.read_pool(pool.pool_files(str(corpus_file)), "text")
    p = pool.read_pool(pool.pool_files(str(corpus_file)), "body")
    with pytest.raises(ConfigError, match="filters.thresholds.nope: no such score column in the pool"):
        pool.filters_mask(p, {"nope": {"min": 1}}, None)


def test_eval_sets_builtin_and_files(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"text": f"an evaluation text {i}"}) + "\n" for i in range(5)))
    sets = pool.eval_sets(["pydoc"], {"mine": str(f)}, "text", 20_000)
    assert set(sets) == {"pydoc", "mine"} and len(sets["mine"]) == 5
    assert 20_000 <= sum(map(len, sets["pydoc"])) < 23_000
    with pytest.raises(ConfigError, match="eval.builtin: unknown set 'wiki'"):
        pool.eval_sets(["wiki"], {}, "text", 1000)


def test_man_pages_when_present_are_capped_per_family():
    docs = list(itertools.islice(corpus._man(), 400))
    if not docs:
        pytest.skip("no man pages on this machine")
    families = {}
    for key, _ in docs:
        family = key.removeprefix("man:").replace("-", "_").replace(".", "_").split("_")[0]
        families[family] = families.get(family, 0) + 1
    assert max(families.values()) <= corpus.MAN_FAMILY_CAP
