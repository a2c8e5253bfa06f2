"""``litho probe`` refuses bad input with one line, before Ray starts or a student trains."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main


@pytest.fixture
def scored(tmp_path, real_texts):
    """A small 'scored corpus': real texts with two numeric score columns."""
    path = tmp_path / "scored.jsonl"
    rows = [{"text": t, "quality": float(i % 7), "other": float(len(t))} for i, t in enumerate(real_texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["seeds=0"], "litho: error: seeds=0: give an integer >= 1"),
        (["nope=1"], "litho: error: nope=1: no such key in the config"),
        (["student.heads=3"], "litho: error: student.heads=3: must divide student.hidden_size=128"),
        (["budget_tokens=10"], "litho: error: budget_tokens=10: give an integer >= 256"),
        (["pool=/no/such/dir"], "litho: error: pool=/no/such/dir: no such file or directory"),
        (["student.dtype=fp16"], "litho: error: student.dtype=fp16: use auto, bf16 or fp32"),
    ],
)
def test_bad_config_is_one_line(capsys, argv, message, tmp_path):
    assert _error(capsys, f"output.dir={tmp_path / 'out'}", *argv).startswith(message)


def test_bad_arms_name_the_key_and_the_pools_scores(capsys, scored, tmp_path):
    common = [
        f"pool={scored}",
        f"output.dir={tmp_path / 'out'}",
        "eval.builtin=[pydoc]",
        "eval.max_chars=5000",
    ]
    line = _error(capsys, *common, "halves=[qualty]")
    assert line.startswith(
        "litho: error: halves=qualty: no such column 'qualty' in the pool; its score columns are"
    )
    assert "'quality'" in line
    line = _error(capsys, *common, "halves=[quality]", "budget_tokens=100000")
    assert "budget_tokens: arm 'random' has only" in line and "lower budget_tokens" in line
    line = _error(capsys, *common, "filters.thresholds={nope: {min: 1}}")
    assert line.startswith("litho: error: filters.thresholds.nope: no such score column in the pool")
