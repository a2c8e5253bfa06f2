"""The model-centric scores in a run's stage list: which columns the LM scorer adds for ``generate`` and
for ``score`` (with and without ``prompt_column``), and the one-line errors for a missing prompt column
or reference model, all before Ray starts or a model loads."""

from __future__ import annotations

import json

import pytest

from generators.errors import ConfigError
from pipeline.job import Job
from tests.pipeline.conftest import compose


def lm_stage(job: Job):
    return next(s for s in job.process if s.name == "lm_scores")


@pytest.fixture
def corpus(tmp_path, real_texts):
    path = tmp_path / "sft.jsonl"
    rows = [{"text": t, "instruction": f"Explain topic {i}."} for i, t in enumerate(real_texts[:3])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generated_rows_are_scored_after_their_request(tmp_path):
    job = Job.from_config(compose("teacher=dummy", "n=4", f"output.dir={tmp_path}"))
    stage = lm_stage(job)
    assert stage.needs == ("text", "prompt") and stage.kwargs["prompt_column"] == "prompt"
    assert {"attn_influence_v1", "ifd_v1"} <= set(stage.adds) and "ref_gap_v1" not in stage.adds


def test_a_corpus_gets_ifd_only_with_a_prompt_column(tmp_path, corpus):
    base = [f"input={corpus}", f"output.dir={tmp_path / 'o'}"]
    plain = lm_stage(Job.from_config(compose(*base, config_name="score"), "score"))
    assert "ifd_v1" not in plain.adds and plain.needs == ("text",)
    sft = lm_stage(Job.from_config(compose(*base, "prompt_column=instruction", config_name="score"), "score"))
    assert "ifd_v1" in sft.adds and sft.needs == ("text", "instruction")
    with pytest.raises(ConfigError, match="prompt_column: no such column 'question'"):
        Job.from_config(compose(*base, "prompt_column=question", config_name="score"), "score")


def test_reference_model_is_checked_before_the_run(tmp_path, corpus):
    base = [f"input={corpus}", f"output.dir={tmp_path / 'o'}"]
    with pytest.raises(ConfigError, match="filters.lm_reference=/nowhere/model"):
        Job.from_config(compose(*base, "filters.lm_reference=/nowhere/model", config_name="score"), "score")
    job = Job.from_config(
        compose(*base, "filters.lm_reference=embedded:smollm2", config_name="score"), "score"
    )
    assert "ref_gap_v1" in lm_stage(job).adds and lm_stage(job).kwargs["reference"] == "embedded:smollm2"


def test_superfiltering_rule_follows_the_scorer_when_asked(tmp_path, corpus):
    import numpy as np

    from filters.rules.superfiltering import SuperfilteringFilter

    batch = SuperfilteringFilter(1.0)(
        {"ifd_v1": np.array([0.5, 1.0, 1.7, np.nan]), "drop_reason": ["", "", "", ""]}
    )
    assert list(batch["drop_reason"]) == ["", "ifd_not_below_max", "ifd_not_below_max", ""]
    names = [
        s.name
        for s in Job.from_config(
            compose("teacher=dummy", "n=4", f"output.dir={tmp_path}", "filters.max_ifd=1.0")
        ).process
    ]
    assert names[names.index("lm_scores") + 1] == "superfiltering"
    base = [f"input={corpus}", f"output.dir={tmp_path / 'o'}", "filters.max_ifd=1.0"]
    plain = Job.from_config(compose(*base, config_name="score"), "score")  # no request, no IFD, no rule
    assert "superfiltering" not in [s.name for s in plain.process]
    with pytest.raises(ConfigError, match="filters.max_ifd=-1: give a number > 0"):
        Job.from_config(compose("teacher=dummy", "n=4", f"output.dir={tmp_path}", "filters.max_ifd=-1"))
