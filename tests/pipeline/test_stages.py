"""The stage contract outside Ray: resources from cluster/, column checks, the timed runner."""

from __future__ import annotations

import numpy as np
import pytest

from filters.scores.rule_scores import RuleSetScores
from generators.errors import ConfigError
from pipeline.stages import StageRunner, StageSpec, columns_of, resources, seconds_column, validate

CLUSTER = {
    "teacher_actors": 3,
    "teacher_cpus": 1,
    "teacher_gpus": 1,
    "teacher_batch_size": 64,
    "scorer_actors": 2,
    "scorer_batch_size": 128,
    "task_cpus": 0.25,
    "task_concurrency": None,
    "stages": {"near_dedup": {"concurrency": 8}},
}


def test_resources_come_from_the_cluster_config_and_per_stage_overrides():
    assert resources(CLUSTER, "generate", "teacher") == {
        "concurrency": 3,
        "num_cpus": 1,
        "num_gpus": 1,
        "batch_size": 64,
        "resources": None,
    }
    assert resources(CLUSTER, "lm_scores", "scorer")["concurrency"] == 2
    assert resources(CLUSTER, "near_dedup", "task")["concurrency"] == 8
    assert resources(CLUSTER, "exact_dedup", "task")["concurrency"] is None
    with pytest.raises(ConfigError, match=r"cluster.stages.x: unknown keys \['gpus'\]"):
        resources({**CLUSTER, "stages": {"x": {"gpus": 1}}}, "x", "task")


def test_validate_names_the_key_and_the_known_columns():
    specs = [
        StageSpec("score", RuleSetScores, needs=("text",), adds=("rep_dup_line_frac",)),
        StageSpec("rule", RuleSetScores, needs=("nope",), keys={"nope": "filters.thresholds.nope"}),
    ]
    with pytest.raises(ConfigError) as caught:
        validate(specs, ["id", "text"])
    assert str(caught.value) == (
        "filters.thresholds.nope: no such column 'nope' at this point of the run; known columns: id, "
        "rep_dup_line_frac, text"
    )
    assert validate(specs[:1], ["id", "text"]) == {"id", "text", "rep_dup_line_frac"}
    with pytest.raises(ConfigError, match="appear twice"):
        validate([specs[0], specs[0]], ["text"])


def test_columns_come_from_the_stage_class():
    assert columns_of(RuleSetScores, {"rule_sets": ("c4",), "text_column": "body"}) == (
        ("body",),
        ("c4_lorem_ipsum", "c4_curly_bracket", "c4_sentences", "c4_removed_lines_frac"),
    )


def test_runner_times_each_batch_per_row():
    runner = StageRunner(RuleSetScores, {"rule_sets": ("c4",)}, "repetition")
    out = runner({"text": np.array(["a b c d e a b c d e", "x"], dtype=object)})
    assert out[seconds_column("repetition")].shape == (2,) and (out[seconds_column("repetition")] >= 0).all()
    quiet = StageRunner(RuleSetScores, {"rule_sets": ("c4",)}, "repetition", timed=False)(
        {"text": np.array(["a"], dtype=object)}
    )
    assert seconds_column("repetition") not in quiet


class _Counted:
    """A shareable stage that counts how often it is built."""

    shareable = True
    built = 0

    def __init__(self, add: int):
        type(self).built += 1
        self.add = add

    def __call__(self, batch: dict) -> dict:
        return {"x": batch["x"] + self.add}


def test_a_small_run_builds_a_shareable_stage_once_per_worker_and_again_for_new_arguments():
    from pipeline.stages import StageSpec, run_shared, shareable

    _Counted.built = 0
    batch = {"x": np.arange(3)}
    for _ in range(3):  # batches of one run, and a later run with the same arguments
        out = run_shared(batch, _Counted, {"add": 1}, name="counted")
    assert _Counted.built == 1 and out["x"].tolist() == [1, 2, 3] and "_litho_s_counted" in out
    assert run_shared(batch, _Counted, {"add": 2}, name="counted")["x"].tolist() == [2, 3, 4]
    assert _Counted.built == 2  # other arguments: built again, replacing the held one
    assert shareable(StageSpec(name="c", fn=_Counted, pool="actors"))
    assert not shareable(
        StageSpec(name="c", fn=_Counted, pool="actors", num_gpus=1)
    )  # GPU stages stay actors
