"""Judge scores: rating parsing, rubric checks, and the stage with a scripted judge (checkpoint reuse)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from filters.scores.judge import JudgeScores, check_rubrics, parse_rating
from generators.errors import ConfigError
from generators.teachers.contract import Completion, SamplingParams

CALLS: list[int] = []


class LengthJudge:
    """A judge that rates by text length (1 per 20 characters, capped): checkable answers, no model."""

    def __init__(self, sampling=None, **_):
        self.name, self.sampling = "length-judge", SamplingParams.from_config(sampling)

    def generate(self, requests):
        CALLS.append(len(requests))
        out = []
        for r in requests:
            text = r.messages[-1]["content"].split("<<<\n", 1)[1].split("\n>>>", 1)[0]
            answer = f'{{"score": {min(10, 1 + len(text) // 20)}}}'
            # Held to the rating schema when the request carries it (as every judge request does), chatty otherwise.
            out.append(Completion(r.id, answer if r.structure is not None else f"Sure. {answer}"))
        return out


def test_parse_rating_reads_json_then_numbers_and_respects_the_scale():
    assert parse_rating('{"score": 7}', 1, 10) == 7.0
    assert parse_rating('I think {"score": 3, "why": "ok"} overall', 1, 10) == 3.0
    assert parse_rating("Score: 8/10", 1, 10) == 8.0
    assert parse_rating("9", 1, 10) == 9.0
    assert math.isnan(parse_rating('{"score": 42}', 1, 10)) and math.isnan(parse_rating("great text", 1, 10))


def test_rubric_and_scale_errors_name_the_key():
    with pytest.raises(ConfigError, match="filters.judge.rubrics: give at least one rubric"):
        check_rubrics({}, [1, 10])
    with pytest.raises(ConfigError, match="filters.judge.rubrics.Bad Name"):
        check_rubrics({"Bad Name": "x"}, [1, 10])
    with pytest.raises(ConfigError, match=r"filters.judge.scale=\[5, 1\]"):
        check_rubrics({"q": "x"}, [5, 1])
    assert JudgeScores.columns(rubrics={"quality": "x", "facts": "y"}) == (
        ("text", "id"),
        ("judge_quality", "judge_facts"),
    )


def test_stage_rates_kept_rows_and_reuses_checkpointed_ratings(tmp_path):
    teacher = {"_target_": "tests.filters.scores.test_judge.LengthJudge"}
    texts = ["short", "a somewhat longer text of about fifty characters..", "x" * 400, "dropped row"]
    batch = {
        "id": np.array(["a", "b", "c", "d"], dtype=object),
        "text": np.array(texts, dtype=object),
        "drop_reason": np.array(["", "", "", "too_short"], dtype=object),
    }
    stage = JudgeScores(teacher, {"quality": "Is it long?"}, checkpoint_dir=str(tmp_path))
    CALLS.clear()
    out = stage(dict(batch))
    np.testing.assert_array_equal(out["judge_quality"][:3], [1.0, 3.0, 10.0])
    assert math.isnan(out["judge_quality"][3]) and CALLS == [3]
    again = JudgeScores(teacher, {"quality": "Is it long?"}, checkpoint_dir=str(tmp_path))(dict(batch))
    assert CALLS == [3] and list(again["judge_quality"][:3]) == [1.0, 3.0, 10.0]
    changed = dict(batch, text=np.array(["short", "now different", "x" * 400, "dropped row"], dtype=object))
    JudgeScores(teacher, {"quality": "Is it long?"}, checkpoint_dir=str(tmp_path))(changed)
    assert CALLS == [3, 1]  # only the row whose text changed is rated again


def test_every_judge_request_carries_the_rating_schema():
    from filters.scores.judge import rating_schema

    stage = JudgeScores(
        {"_target_": "tests.filters.scores.test_judge.LengthJudge"}, {"q": "Long?"}, scale=[2, 7]
    )
    seen = []
    generate = stage.teacher.generate
    stage.teacher.generate = lambda requests: seen.extend(requests) or generate(requests)
    stage({"id": np.array(["a", "b"], dtype=object), "text": np.array(["one", "two"], dtype=object)})
    assert [r.structure.schema for r in seen] == [rating_schema(2, 7)] * 2
    assert seen[0].structure.validate('{"score": 7}') is None and seen[0].structure.validate('{"score": 8}')
