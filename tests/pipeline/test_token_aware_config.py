"""teacher.token_aware from the pipeline's side: checked before Ray, recorded per row, part of the fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from generators.teachers.contract import SamplingParams
from generators.teachers.token_aware import TokenAware
from pipeline import checkpoint
from pipeline.generate import sampling_record

TEACHER = {
    "_target_": "generators.teachers.hf.HFTeacher",
    "model": "embedded:smollm2",
    "dtype": "float32",
    "sampling": {"temperature": 0.7, "top_p": 0.9, "seed": 0, "max_new_tokens": 256},
}
OFF = {"strength": 0.0, "target": None, "ban_byte_fallback": False}


def _with(**aware) -> dict:
    return {**TEACHER, "token_aware": {**OFF, **aware}}


def test_off_keeps_the_checkpoints_of_a_config_without_the_key():
    plain = checkpoint.teacher_fingerprint(TEACHER)
    assert checkpoint.teacher_fingerprint(_with()) == plain
    assert checkpoint.teacher_fingerprint(_with(target="/s.model")) == plain  # a zero bias: the same texts


def test_a_changed_strength_target_or_ban_never_reuses_old_checkpoints():
    prints = [
        checkpoint.teacher_fingerprint(TEACHER),
        checkpoint.teacher_fingerprint(_with(strength=0.5, target="/s.model")),
        checkpoint.teacher_fingerprint(_with(strength=1.0, target="/s.model")),
        checkpoint.teacher_fingerprint(_with(strength=1.0, target="/other.model")),
        checkpoint.teacher_fingerprint(_with(strength=1.0, target="/s.model", ban_byte_fallback=True)),
        checkpoint.teacher_fingerprint(_with(ban_byte_fallback=True, target="/s.model")),
    ]
    assert len(set(prints)) == len(prints)


class _Teacher:
    sampling = SamplingParams(seed=3)

    def __init__(self, aware: TokenAware | None):
        if aware is not None:
            self.sampling_extra = aware.record()


def test_sampling_column_records_strength_and_target():
    on = json.loads(sampling_record(_Teacher(TokenAware(1.5, "/s.model"))))
    assert on["token_aware"] == {"strength": 1.5, "target": "/s.model", "ban_byte_fallback": False}
    assert on["seed"] == 3
    assert json.loads(sampling_record(_Teacher(None))) == json.loads(SamplingParams(seed=3).to_json())
    assert "token_aware" not in json.loads(sampling_record(_Teacher(TokenAware())))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["teacher.token_aware.strength=1"],
            "litho: error: teacher.token_aware.target=null: the teacher does not",
        ),
        (
            ["teacher.token_aware.strength=-2"],
            "litho: error: teacher.token_aware.strength=-2: give a number >= 0",
        ),
        (
            ["teacher.token_aware.strength=1", "teacher.token_aware.target=/no/such.model"],
            "litho: error: teacher.token_aware.target=/no/such.model: no such SentencePiece model file",
        ),
    ],
)
def test_bad_settings_are_one_line_before_ray(overrides, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", *overrides, f"output.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr
