"""Decontamination on a planted case built from real text: copies of evaluation n-grams and a
paraphrase are dropped with the evaluation row that matched; near misses are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from filters.dedup.decontaminate import Decontaminate, DecontaminationIndex, EvalSet
from generators.errors import ConfigError


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory, real_texts):
    """An evaluation set of question/answer pairs cut from real text (pydoc topics, man pages)."""
    rows = []
    for text in real_texts[:6]:
        words = text.split()
        rows.append({"question": " ".join(words[:30]), "answer": " ".join(words[30:60])})
    rows.append(
        {"question": "What does the grep option -v do exactly?", "answer": "x"}
    )  # 8 words: matched whole
    path = tmp_path_factory.mktemp("eval") / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _stage(eval_file, tmp_path, **kw):
    path, _ = eval_file
    sets = [{"path": str(path), "columns": ["question", "answer"]}]
    return Decontaminate(sets=sets, cache_dir=str(tmp_path), **kw)


def test_planted_copies_and_paraphrases_are_dropped_near_misses_kept(eval_file, tmp_path, real_texts):
    _, rows = eval_file
    clean = [" ".join(t.split()[:120]) for t in real_texts[10:14]]
    answer = rows[2]["answer"].split()
    planted_13 = clean[0] + " " + " ".join(answer[5:18]) + " and so on."  # exactly 13 words of an answer
    planted_12 = clean[1] + " " + " ".join(answer[5:17]) + " and so on."  # 12 words: below the n-gram
    # One word in ten changed: no 13 words in a row survive, but most 3-word shingles do.
    source = (rows[4]["question"] + " " + rows[4]["answer"]).split()
    paraphrase = " ".join("CHANGED" if i % 10 == 3 else w for i, w in enumerate(source))
    short = clean[2] + " So: what does the grep option -v do exactly? Read on."
    texts = [planted_13, planted_12, paraphrase, short, clean[3]]
    batch = {"text": np.array(texts, dtype=object), "drop_reason": np.array([""] * 5, dtype=object)}
    out = _stage(eval_file, tmp_path)(batch)
    assert list(out["drop_reason"]) == ["contaminated", "", "contaminated", "contaminated", ""]
    assert list(out["contaminated_by"]) == ["bench:2", "", "bench:4", "bench:6", ""]
    # n-grams only: the paraphrase shares no 13 words in a row with its source
    out = _stage(eval_file, tmp_path, jaccard=None)({"text": np.array(texts, dtype=object)})
    assert list(out["drop_reason"]) == ["contaminated", "", "", "contaminated", ""]


def test_the_index_is_built_once_and_reused(eval_file, tmp_path):
    path, _ = eval_file
    first = DecontaminationIndex([EvalSet(str(path), ("question", "answer"))], cache_dir=tmp_path)
    stamp = (first.dir / "ngrams.npz").stat().st_mtime_ns
    second = DecontaminationIndex([EvalSet(str(path), ("question", "answer"))], cache_dir=tmp_path)
    assert second.dir == first.dir and (second.dir / "ngrams.npz").stat().st_mtime_ns == stamp
    other = DecontaminationIndex([EvalSet(str(path), ("question",))], cache_dir=tmp_path)
    assert other.dir != first.dir


def test_bad_settings_are_one_line_errors(eval_file, tmp_path):
    path, _ = eval_file
    with pytest.raises(ConfigError, match="dedup.decontaminate.sets: /no/file.jsonl: no such file"):
        Decontaminate.columns(sets=["/no/file.jsonl"])
    with pytest.raises(ConfigError, match="dedup.decontaminate.ngram=1"):
        Decontaminate.columns(sets=[str(path)], ngram=1)
    with pytest.raises(ConfigError, match=r"has no 'text'; it has \['answer', 'question'\]"):
        Decontaminate(sets=[str(path)], cache_dir=str(tmp_path))
