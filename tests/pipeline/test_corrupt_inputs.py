"""Corrupt inputs for litho score / dedup (issue #13): a one-line error naming the file and line
before Ray starts, or a recorded per-row drop reason; never a traceback, never a silently lost row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from pipeline.inputs import input_columns
from tests.pipeline.conftest import compose

ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, texts: list[str], insert: dict[int, bytes] | None = None) -> Path:
    """``texts`` as JSONL with raw ``insert`` lines placed before the given 0-based line numbers."""
    lines = [(json.dumps({"text": t}) + "\n").encode() for t in texts]
    for at, raw in sorted((insert or {}).items(), reverse=True):
        lines.insert(at, raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    "raw,problem",
    [
        (b'{"text": "cut off\n', "line 3 is not JSON"),
        (b'{"text": "caf\xe9 au lait"}\n', "line 3 is not UTF-8 (byte 13); re-encode the file as UTF-8"),
        (b'["a", "list"]\n', "line 3 is not a JSON object"),
    ],
)
def test_a_bad_jsonl_line_is_named_before_ray(tmp_path, real_texts, raw, problem):
    path = _jsonl(tmp_path / "corpus" / "b.jsonl", real_texts[:5], {2: raw})
    _jsonl(tmp_path / "corpus" / "a.jsonl", real_texts[5:8])  # a good file first: every file is read
    with pytest.raises(
        ConfigError,
        match="^input: "
        + str(path).replace(".", r"\.")
        + " "
        + problem.replace("(", r"\(").replace(")", r"\)"),
    ):
        input_columns(str(tmp_path / "corpus"), "text", None)


def test_truncated_parquet_and_all_empty_inputs_are_refused(tmp_path, real_texts):
    good = tmp_path / "p" / "a.parquet"
    good.parent.mkdir()
    pq.write_table(pa.table({"text": real_texts[:4]}), good)
    cut = tmp_path / "p" / "b.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ConfigError, match=f"{cut} is not a readable Parquet file"):
        input_columns(str(tmp_path / "p"), "text", None)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.jsonl").write_bytes(b"")
    (tmp_path / "e" / "b.jsonl").write_bytes(b"\n\n")
    with pytest.raises(ConfigError, match="every file is empty"):
        input_columns(str(tmp_path / "e"), "text", None)


@pytest.mark.slow
def test_null_texts_and_a_50_mb_document_are_recorded_and_empty_files_add_nothing(
    ray_session, tmp_path, real_texts
):
    from pipeline.run import run

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = real_texts[:6]
    huge = " ".join(real_texts) * (50_000_000 // len(" ".join(real_texts)) + 1)  # a 50 MB document
    pq.write_table(pa.table({"text": texts[:3] + [None] + texts[3:]}), corpus / "a.parquet")
    pq.write_table(pa.table({"text": [huge[:50_000_000]]}), corpus / "c.parquet")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), corpus / "b.parquet")  # no rows
    out = tmp_path / "out"
    manifest = run(
        compose("input=" + str(corpus), f"output.dir={out}", "++filters.lm=null", config_name="score"),
        "score",
    )
    rows = [
        r
        for d in ("data", "rejected")
        for f in sorted((out / d).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    assert manifest["counts"]["rows_in"] == 8 == len(rows)  # nothing lost, nothing invented
    (big,) = [r for r in rows if r["source_file"].endswith("c.parquet")]
    assert big["drop_reason"] == "too_long" and len(big["text"]) == 50_000_000 and big["n_tokens"] == 0
    rows = [r for r in rows if r is not big]
    null = [r for r in rows if r["source_row"] == 3]
    assert len(null) == 1 and null[0]["drop_reason"] == "null_text" and null[0]["text"] == ""
    assert manifest["dropped_by_reason"].get("null_text") == 1
    assert sorted(r["text"] for r in rows if r["source_row"] != 3) == sorted(texts)


@pytest.mark.slow
def test_the_cli_prints_one_line_and_no_traceback(tmp_path, real_texts):
    path = _jsonl(tmp_path / "corpus.jsonl", real_texts[:5], {3: b"not json at all\n"})
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "score", f"input={path}", f"output.dir={tmp_path / 'out'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"litho: error: input: {path} line 4 is not JSON (Expecting value: line 1 column 1 (char 0)); fix or remove that line"
    ]
    assert not (tmp_path / "out" / "data").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "raw,problem",
    [(b"{oops\n", "line 2 is not JSON"), (b'{"text": "\xff\xfe"}\n', "line 2 is not UTF-8 (byte 10)")],
)
def test_a_corrupt_seed_corpus_is_named_with_its_line(tmp_path, real_texts, raw, problem):
    from generators.prompts.seeds import load_seeds

    path = _jsonl(tmp_path / "seeds.jsonl", real_texts[:3], {1: raw})
    with pytest.raises(ConfigError, match=rf"^generator\.seed_file: {path} {re.escape(problem)}"):
        load_seeds(str(path))
    cut = tmp_path / "seeds.parquet"
    pq.write_table(pa.table({"text": real_texts[:3]}), cut)
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(ConfigError, match=f"generator.seed_file: {cut} is not a readable Parquet file"):
        load_seeds(str(cut))


def test_seed_rows_without_text_are_counted_not_silently_skipped(tmp_path, real_texts, caplog):
    from generators.prompts.seeds import load_seeds

    path = tmp_path / "seeds.parquet"
    pq.write_table(pa.table({"text": [real_texts[0], None, None, real_texts[1]]}), path)
    seeds = load_seeds(str(path), min_words=5)
    assert {s.source_row for s in seeds} == {0, 3}
    assert f"2 rows of {path} have no text in text (null): skipped" in caplog.text
