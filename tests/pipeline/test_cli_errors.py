"""Bad input fails fast, before Ray starts, with one line naming the key and the fix."""

import os
import subprocess
import sys

import pytest

CASES = [
    (["n=0"], "n=0: the number of requests must be a positive integer"),
    (["n=-5"], "n=-5"),
    (["teacher.model=/no/such/model"], "teacher.model=/no/such/model: no such model file or directory"),
    (["output.dir=/proc/litho-out"], "output.dir=/proc/litho-out: not writable"),
    (["generator.formats=[poem]"], "generator.formats: unknown ['poem']"),
]


def _litho(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("overrides, message", CASES)
def test_bad_input_is_one_line(overrides, message, tmp_path):
    args = (
        ["generate", *overrides]
        if any(o.startswith("output.dir") for o in overrides)
        else ["generate", *overrides, f"output.dir={tmp_path}"]
    )
    result = _litho(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("litho: error: ") and message in lines[0], result.stderr


def test_unknown_override_is_rejected_by_hydra(tmp_path):
    result = _litho("generate", "nn=3", f"output.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not override 'nn'" in result.stderr


def test_unknown_command():
    result = _litho("frobnicate")
    assert result.returncode == 2 and "usage: litho" in result.stderr
