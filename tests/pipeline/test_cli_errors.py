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
    (["nn=3"], "nn=3: no such key in the config; did you mean n=3?"),
    (["frobnicate=1"], "frobnicate=1: no such key in the config; check the spelling"),
    (["teacher.sampling.temprature=1"], "did you mean teacher.sampling.temperature=1?"),
    (["sampling.top_p=0.5"], "did you mean teacher.sampling.top_p=0.5?"),
    (["generator=poem"], "generator=poem: no such config option; use one of dense, instruct, layered"),
    (
        ["generator=textbok"],
        "use one of dense, instruct, layered, rephrase, textbook; did you mean generator=textbook?",
    ),
    (
        ["output=/tmp/y"],
        "output=/tmp/y: output is a config group (pretrain, sft), not a directory; write output.dir=/tmp/y",
    ),
    (["n=[1"], "bad override syntax"),
    (["generator=rephrase"], "generator.seed_file=???: this key has no default"),
    (["teacher.sampling.temperature=-1"], "teacher.sampling.temperature=-1: give >= 0"),
    (["teacher.checkpoint_rows=0"], "teacher.checkpoint_rows=0: give a positive integer"),
    (["teacher.checkpoint_s=-1"], "teacher.checkpoint_s=-1: give a positive number of seconds"),
    (["teacher.price={prompt: 1}"], "teacher.price={'prompt': 1}: give USD per million tokens"),
    (["cluster.teacher_batches_in_flight=0"], "cluster.teacher_batches_in_flight=0: give a positive integer"),
    (["teacher.sampling.top_p=1.5"], "teacher.sampling.top_p=1.5: give in (0, 1]"),
    (["output.validation_fraction=1.5"], "output.validation_fraction=1.5: give a fraction in [0, 1)"),
    (["dedup=minhash", "dedup.minhash.num_perm=64"], "dedup.minhash.num_perm=64: must equal bands*rows=20*5"),
    (["generator.structure={regex: '['}"], "generator.structure.regex='[': "),
    (["output.token_formats=[arrow]"], "output.token_formats=['arrow']: unknown format 'arrow'"),
    (
        ["filters.rule_sets=[c4,gopher_repitition]"],
        "filters.rule_sets: unknown rule set 'gopher_repitition'; use some of gopher_repetition, gopher_quality, "
        "c4, fineweb; did you mean gopher_repetition?",
    ),
    (
        ["filters.rule_thresholds={gopher_repetition: {dup_lines: 0.5}}"],
        "filters.rule_thresholds.gopher_repetition.dup_lines: no such rule; use one of dup_line_char_frac,",
    ),
    (
        ["teacher=openai", "teacher.model=m", "filters.tokenizer=embedded:smollm2", "teacher.guided=xml"],
        "teacher.guided=xml: use one of",
    ),  # fmt: skip
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


def test_corpus_commands_name_their_missing_input(tmp_path):
    for command in ("score", "dedup"):
        result = _litho(command, f"output.dir={tmp_path}")
        assert result.returncode == 2, result.stderr
        assert (
            result.stderr.strip()
            == "litho: error: input=???: this key has no default; set it, e.g. input=VALUE"
        )


def test_score_with_a_path_for_the_output_group_names_output_dir(tmp_path):
    result = _litho("score", f"input={tmp_path}", "output=/tmp/y")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "litho: error: output=/tmp/y: output is a config group (pretrain, sft), not a directory; "
        "write output.dir=/tmp/y"
    )


@pytest.mark.parametrize(
    "key, meant",
    [
        ("nn", "n"),
        ("filters.min_word", "filters.min_words"),
        ("teacher.modle", "teacher.model"),
        ("sampling.temperature", "teacher.sampling.temperature"),
        ("dedup.exakt", "dedup.exact"),
        ("zzzzzz", None),
    ],
)
def test_closest_key(key, meant):
    from pipeline.cli import _known_keys, closest_key

    assert closest_key(key, _known_keys("config", [])) == meant


def test_unknown_command():
    result = _litho("frobnicate")
    assert result.returncode == 2 and "usage: litho" in result.stderr
