"""A sampled text depends only on (model, prompt, sampling, seed, request id): never on its batch.

CPU, float32 (bf16 rounds logits coarsely enough that another batch shape can change a token);
the Ray side (1 or 2 actors, other teacher batch sizes) is tests/pipeline/test_determinism.py.
"""

from __future__ import annotations

import pytest

from generators.teachers.contract import Request
from generators.teachers.fast import FastTeacher
from generators.teachers.hf import HFTeacher

pytestmark = pytest.mark.usefixtures("one_thread")

TOPICS = ["cats", "rain", "numbers", "the river", "a fox", "small things", "a teacher", "dogs"]
REQUESTS = [
    Request(f"req-{i}", ({"role": "user", "content": f"Write about {t}." + " Please." * (i % 4)},))
    for i, t in enumerate(TOPICS + [t.upper() for t in TOPICS])
]
SAMPLING = dict(max_new_tokens=40, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=11)


def _texts(teacher, requests=REQUESTS) -> dict[str, str]:
    return {c.id: c.text for c in teacher.generate(requests)}


@pytest.mark.parametrize("sampling", [SAMPLING, dict(SAMPLING, top_k=20, repetition_penalty=1.0)])
def test_hf_text_does_not_depend_on_batch_size_or_neighbours(model_dir, sampling):
    teacher = HFTeacher(model_dir, device="cpu", dtype="float32", sampling=sampling)
    runs = []
    for batch_size in (1, 5, 32):
        teacher.batch_size = batch_size
        runs.append(_texts(teacher))
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0].values())) == len(REQUESTS)  # really sampled: every text differs
    alone = _texts(teacher, REQUESTS[3:4])  # the same request with no neighbours at all
    assert alone[REQUESTS[3].id] == runs[0][REQUESTS[3].id]


def test_another_seed_or_id_gives_another_text(model_dir):
    teacher = HFTeacher(model_dir, device="cpu", dtype="float32", sampling=SAMPLING)
    base = _texts(teacher)
    teacher.sampling = type(teacher.sampling).from_config(dict(SAMPLING, seed=12))
    assert all(base[k] != v for k, v in _texts(teacher).items())
    renamed = [Request(r.id + "x", r.messages) for r in REQUESTS[:4]]
    assert [c.text for c in teacher.generate(renamed)] != [base[r.id] for r in REQUESTS[:4]]


def test_fast_text_does_not_depend_on_slots_refill_or_batch_and_equals_hf(model_dir):
    hf = _texts(HFTeacher(model_dir, device="cpu", dtype="float32", sampling=SAMPLING, batch_size=32))
    for max_batch, refill in ((1, True), (5, True), (5, False), (32, True)):
        fast = FastTeacher(
            model_dir,
            device="cpu",
            dtype="float32",
            sampling=SAMPLING,
            max_batch=max_batch,
            refill=refill,
            prompt_bucket=8,
            sync_every=3,
        )
        assert _texts(fast) == hf, (max_batch, refill)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [HFTeacher, FastTeacher])
def test_embedded_teacher_text_does_not_depend_on_batch_size(backend):
    """The real embedded teacher (loaded once; its batch size changes between calls, as a teacher actor's
    engine meets batches of every size). Four requests: one at a time, 3 + 1, and all together."""
    requests = REQUESTS[:4]
    sampling = dict(SAMPLING, max_new_tokens=24, repetition_penalty=1.1)
    teacher = backend("embedded:smollm2", device="cpu", dtype="float32", sampling=sampling)
    runs = []
    for b in (1, 3, 32):
        if backend is HFTeacher:
            teacher.batch_size = b
        else:
            teacher.engine.max_batch = b
        runs.append(_texts(teacher, requests))
    assert runs[0] == runs[1] == runs[2]
    assert all(len(t.split()) > 5 for t in runs[0].values())


def test_model_generation_config_does_not_add_its_own_penalty(model_dir, tmp_path):
    """transformers fills unset generate() fields from the model's generation_config.json: a penalty
    there would penalise the left padding too, and so make a text depend on its neighbours."""
    import json
    import shutil

    penalised = tmp_path / "penalised"
    shutil.copytree(model_dir, penalised)
    config = json.loads((penalised / "generation_config.json").read_text())
    (penalised / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 5.0}))
    greedy = dict(max_new_tokens=24, temperature=0.0)
    plain = _texts(HFTeacher(model_dir, device="cpu", dtype="float32", sampling=greedy))
    assert _texts(HFTeacher(str(penalised), device="cpu", dtype="float32", sampling=greedy)) == plain
