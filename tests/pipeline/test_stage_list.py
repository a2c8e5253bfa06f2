"""The stage list: built from every config combination and validated before Ray starts or a model loads."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from generators.errors import ConfigError
from pipeline.job import Job
from tests.pipeline.conftest import compose

GENERATORS = ("textbook", "rephrase", "instruct", "dense", "layered")
OUTPUTS = ("pretrain", "sft")
DEDUPS = ("exact", "minhash", "none")


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory, real_texts):
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in real_texts[:4]))
    return path


@pytest.mark.parametrize("generator, output, dedup", list(itertools.product(GENERATORS, OUTPUTS, DEDUPS)))
def test_every_combination_builds_a_valid_stage_list(generator, output, dedup, seed_file, tmp_path):
    overrides = ["teacher=dummy", "n=4", f"generator={generator}", f"output={output}", f"dedup={dedup}"]
    overrides += [f"output.dir={tmp_path}", "best_of_n.n_candidates=2"]
    if generator in ("rephrase", "dense"):
        overrides.append(f"generator.seed_file={seed_file}")
    cfg = compose(*overrides)
    if output == "sft" and generator != "instruct":
        with pytest.raises(ConfigError, match="output=sft needs conversations"):
            Job.from_config(cfg)
        return
    job = Job.from_config(cfg)
    names = [s.name for s in job.stages]
    assert names[:2] == ["generate", "clean"] and "best_of_n" in names
    assert ("near_dedup" in names) == (dedup == "minhash") and ("exact_dedup" in names) == (dedup != "none")
    own = {"dense": ["dense_scores", "dense"], "instruct": ["conversation"], "layered": ["layers"]}
    assert [n for n in names if n in {"dense_scores", "dense", "conversation", "layers"}] == own.get(
        generator, []
    )
    assert ("sft_prompt" in names) == (output == "sft")
    assert job.score_versions()[:2] == ["token_metrics_v2", "repetition_v2"]
    assert job.plan.rows == 8 and all(s.needs or s.kind in ("prepare", "select") for s in job.stages[1:])


def test_corpus_commands_validate_against_the_input_columns(tmp_path, real_texts):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(real_texts[:3])))
    job = Job.from_config(
        compose(f"input={corpus}", f"output.dir={tmp_path / 'o'}", "text_column=body", config_name="score"),
        "score",
    )
    assert [s.name for s in job.process] == [
        "length",
        "token_metrics",
        "rule_scores",
        "sanity",
        "gopher_repetition",
        "lm_scores",
    ]
    assert job.input_scores == ("n",)
    with pytest.raises(ConfigError, match="text_column=text: no such column in .*in.jsonl; it has"):
        Job.from_config(
            compose(f"input={corpus}", f"output.dir={tmp_path / 'o'}", config_name="score"), "score"
        )
    job = Job.from_config(
        compose(
            f"input={corpus}", f"output.dir={tmp_path / 'd'}", "text_column=body", config_name="dedup_corpus"
        ),
        "dedup",
    )
    assert [s.name for s in job.process] == ["exact_dedup", "near_dedup"] and job.score_versions() == []


def test_readme_threshold_form_is_accepted(tmp_path):
    cfg = compose(
        "teacher=dummy", f"output.dir={tmp_path}", "filters.thresholds={chars_per_token: {min: 4.0}}"
    )
    spec = next(s for s in Job.from_config(cfg).stages if s.name == "thresholds")
    assert spec.kwargs == {"bounds": {"chars_per_token": {"min": 4.0}}} and spec.needs == ("chars_per_token",)


def test_generator_filters_come_from_its_config(tmp_path, seed_file):
    cfg = compose(
        "teacher=dummy",
        "generator=dense",
        f"generator.seed_file={seed_file}",
        "generator.filters.dense.min_key_term_recall=0.5",
        f"output.dir={tmp_path}",
    )
    specs = {s.name: s for s in Job.from_config(cfg).stages}
    assert specs["dense"].kwargs["min_key_term_recall"] == 0.5 and specs["dense"].kind == "filter"
    assert (
        specs["dense_scores"].kwargs["tokenizer"] == "embedded:smollm2"
        and specs["dense_scores"].version == "dense_v1"
    )
    assert list(specs).index("dense_scores") < list(specs).index("dense")


LATE_ERRORS = [
    (
        ["'filters.thresholds={no_such_score: {min: 1}}'"],
        "filters.thresholds.no_such_score: no such column 'no_such_score' at this point of the run; known columns:",
    ),
    (["dedup=minhash", "dedup.minhash.keep_by=nope"], "dedup.minhash.keep_by=nope: no such column 'nope'"),
    (["filters.truncated=maybe"], "filters.truncated=maybe: use trim, keep or drop"),
    (["'filters.quantile_bands={nope_v1: [0.1, 0.9]}'"], "filters.quantile_bands.nope_v1: no such column"),
    (
        ["'filters.quantile_bands={n_tokens: [0.9, 0.1]}'"],
        "filters.quantile_bands.n_tokens=[0.9, 0.1]: give two",
    ),
    (
        ["best_of_n.n_candidates=2", "best_of_n.score=nope * 2"],
        "best_of_n.score='nope * 2': no such column 'nope'",
    ),
    (["filters.lm.stride=0"], "filters.lm.stride=0: use 1..max_len-1"),
    (["'cluster.stages={lm_scores: {gpus: 1}}'"], "cluster.stages.lm_scores: unknown keys ['gpus']"),
    (
        ["filters/judge=embedded", "filters.judge.teacher.model=/no/judge"],
        "filters.judge.teacher.model=/no/judge: no such model",
    ),
    (
        ["filters/judge=embedded", "filters.judge.scale=[3, 1]"],
        "filters.judge.scale=[3, 1]: give two integers",
    ),
]


@pytest.mark.parametrize("overrides, message", LATE_ERRORS)
def test_errors_come_before_ray_or_any_model(overrides, message, tmp_path, monkeypatch):
    """The default teacher (hf) and Ray would be next: both are made to fail loudly if reached."""
    import ray

    import generators.teachers.hf
    from pipeline.run import run

    def reached(*args, **kwargs):
        raise AssertionError("a teacher was built or Ray was started before the config was checked")

    monkeypatch.setattr(generators.teachers.hf.HFTeacher, "__init__", reached)
    monkeypatch.setattr(ray, "init", reached)
    with pytest.raises(ConfigError) as caught:
        run(compose(f"output.dir={tmp_path}", *[o.strip("'") for o in overrides]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_late_errors_are_one_line_from_the_cli(tmp_path):
    for overrides, message in LATE_ERRORS[:3]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "generate",
                *[o.strip("'") for o in overrides],
                f"output.dir={tmp_path}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
