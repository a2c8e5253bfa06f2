"""Through Ray: a request's text is the same with 1 or 2 teacher actors and any batch sizes, so batch
sizes may change between a run and its resume (pipeline/checkpoint.py OPERATIONAL_KEYS); what changes
a text (dtype, device, sampler version) gives another checkpoint folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xxhash

from pipeline import checkpoint
from tests.helpers.random_models import write_random_model
from tests.pipeline.conftest import compose

TEACHER = {
    "_target_": "generators.teachers.hf.HFTeacher",
    "model": "embedded:smollm2",
    "device": "auto",
    "dtype": "auto",
    "batch_size": 32,
    "threads": 0,
    "sampling": {"temperature": 0.7, "top_p": 0.9, "seed": 0, "max_new_tokens": 256},
}


@pytest.mark.parametrize(
    "key, value", [("batch_size", 1), ("threads", 2), ("max_batch", 64), ("refill", False), ("sync_every", 4)]
)
def test_operational_keys_keep_the_checkpoint_folder(key, value):
    assert key in checkpoint.OPERATIONAL_KEYS
    assert checkpoint.teacher_fingerprint({**TEACHER, key: value}) == checkpoint.teacher_fingerprint(TEACHER)


@pytest.mark.parametrize(
    "key, value",
    [
        ("dtype", "float32"),
        ("dtype", "bfloat16"),
        ("device", "cpu"),
        ("model", "other"),
        ("sampling", {**TEACHER["sampling"], "seed": 1}),
        ("sampling", {**TEACHER["sampling"], "top_p": 0.95}),
        ("engine_kwargs", {"quantization": "fp8"}),  # teacher=vllm: any vllm.LLM argument
    ],
)
def test_what_changes_a_text_changes_the_checkpoint_folder(key, value):
    assert key not in checkpoint.OPERATIONAL_KEYS
    assert checkpoint.teacher_fingerprint({**TEACHER, key: value}) != checkpoint.teacher_fingerprint(TEACHER)


def test_another_sampler_version_never_reuses_old_checkpoints(monkeypatch):
    """Texts made by an older sampler (or before litho had one: no version in the hash) are not reused."""
    from generators.teachers import sampling

    now = checkpoint.teacher_fingerprint(TEACHER)
    monkeypatch.setattr(sampling, "SAMPLER_VERSION", "litho-sampler-older")
    assert checkpoint.teacher_fingerprint(TEACHER) != now
    unversioned = {k: v for k, v in TEACHER.items() if k not in checkpoint.OPERATIONAL_KEYS}
    unversioned["_target_"] = "HFTeacher"
    before = xxhash.xxh3_64_hexdigest(json.dumps(unversioned, sort_keys=True, default=str).encode())
    assert before != now


def _generated(out: Path) -> dict[str, str]:
    files = sorted(out.glob(".litho/generations/*/block=*/gen-*.parquet"))
    return {r["id"]: r["text"] for f in files for r in pq.read_table(f, columns=["id", "text"]).to_pylist()}


@pytest.mark.slow
def test_resume_with_two_actors_and_other_batch_sizes_gives_the_same_texts(ray_session, tmp_path):
    """Over 30 s: two runs of a tiny random-weight teacher in fp32 (one actor, then two actors resuming half
    of the plan), each starting its teacher actors and loading the model."""
    from pipeline.run import run

    model = write_random_model(tmp_path / "model", "tiny-llama")
    common = [
        "n=12",
        "teacher=hf",
        f"teacher.model={model}",
        "teacher.dtype=float32",
        "teacher.sampling.max_new_tokens=24",
        "filters.lm=null",
        "filters.min_words=1",
        "cluster.teacher_cpus=0.5",
        f"output.dir={tmp_path / 'run'}",
    ]
    one_actor = ["cluster.teacher_actors=1", "cluster.teacher_batch_size=32", "teacher.batch_size=32"]
    two_actors = ["cluster.teacher_actors=2", "cluster.teacher_batch_size=2", "teacher.batch_size=1"]
    assert run(compose(*common, *one_actor))["counts"]["generated"] == 12
    first = _generated(tmp_path / "run")
    assert len(first) == 12 and len(set(first.values())) == 12

    # Lose every checkpoint, then let the other layout redo half of the requests.
    checkpoints = sorted((tmp_path / "run").glob(".litho/generations/*/block=*/gen-*.parquet"))
    assert len(checkpoints) == 1
    kept = pq.read_table(checkpoints[0]).slice(0, 6)
    pq.write_table(kept, checkpoints[0])
    # The 6 requests left are one plan block: the teacher stage splits it so that both actors get batches.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        manifest = run(compose(*common, *two_actors))
    assert not [w for w in seen if "only received 1 input" in str(w.message)]
    assert manifest["counts"]["reused"] == 6 and manifest["counts"]["generated"] == 6
    assert _generated(tmp_path / "run") == first
