"""teacher=vllm: sampling mapping, per-row errors and engine restarts against a scripted engine (fast, no
vLLM needed), then the real engine on the embedded teacher (``-m vllm``, run by ``make test-vllm`` in
.venv-vllm)."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import types

import pytest

from generators.teachers.contract import FINISH_ERROR, FINISH_LENGTH, Request, SamplingParams
from generators.teachers.openai import OpenAITeacher
from generators.teachers.structure import Structure
from generators.teachers.vllm import VLLMTeacher, request_seed, sampling_kwargs
from tests.helpers.random_models import write_random_model

SAMPLED = dict(max_new_tokens=16, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=3)
TOPICS = ["tides", "prime numbers", "bread yeast", "glaciers", "volcanoes", "the printing press", "bees"]


def ask(i: int, topic: str) -> Request:
    return Request(f"q{i}", ({"role": "user", "content": f"Write two sentences about {topic}."},))


REQUESTS = [ask(i, t) for i, t in enumerate(TOPICS)]


# --- sampling and failure isolation: plain functions ------------------------------------------------


def test_each_request_gets_its_own_seed_the_openai_teacher_sends_too():
    sp = SamplingParams(**SAMPLED, top_k=0)
    kwargs = [sampling_kwargs(sp, r.id) for r in REQUESTS]
    assert kwargs[0] | {"seed": 0} == dict(
        max_tokens=16,
        temperature=0.7,
        repetition_penalty=1.1,
        stop=[],
        skip_special_tokens=True,
        top_p=0.9,
        top_k=-1,  # vLLM's "off"
        seed=0,
    )
    seeds = [k["seed"] for k in kwargs]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [request_seed(r.id, 3) for r in REQUESTS] != [request_seed(r.id, 4) for r in REQUESTS]
    served = OpenAITeacher("http://127.0.0.1:9/v1", "m", api_key_env="", sampling=SAMPLED)
    assert seeds == [served._payload(r)["seed"] for r in REQUESTS]


def test_greedy_sends_no_seed_and_no_truncation():
    kwargs = sampling_kwargs(SamplingParams(temperature=0.0, top_k=5, stop=("\n\n",)), "q0")
    assert kwargs["temperature"] == 0.0 and kwargs["stop"] == ["\n\n"]
    assert not {"seed", "top_p", "top_k"} & set(kwargs)


# --- the teacher against a scripted engine ----------------------------------------------------------


class ScriptedLLM:
    """Stands in for ``vllm.AsyncLLM``: streams what it was given two tokens a step, fails where told to."""

    started = 0
    die = False
    seen: list = []

    def __init__(self, args):
        from transformers import AutoTokenizer

        ScriptedLLM.started += 1
        self.kwargs = args
        self.tokenizer = AutoTokenizer.from_pretrained(args["model"])

    @classmethod
    def from_engine_args(cls, args):
        return cls(args)

    def get_tokenizer(self):
        return self.tokenizer

    def shutdown(self):
        pass

    async def generate(self, prompt, params, request_id):
        ScriptedLLM.seen.append(params)
        if ScriptedLLM.die:
            raise type("EngineDeadError", (RuntimeError,), {})("EngineCore encountered an issue")
        ids = prompt["prompt_token_ids"]
        if max(ids) >= len(self.tokenizer):
            raise ValueError(f"Token id {max(ids)} is out of vocabulary")
        text = f" seed={params.seed} prompt={len(ids)} "
        for step in range(0, params.max_tokens, 2):
            await asyncio.sleep(0)
            last = step + 2 >= params.max_tokens
            piece = types.SimpleNamespace(
                text=text if last else "", token_ids=[0, 0], finish_reason="length" if last else None
            )
            yield types.SimpleNamespace(outputs=[piece])


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    fake = types.ModuleType("vllm")
    fake.AsyncLLMEngine = ScriptedLLM
    fake.AsyncEngineArgs = lambda **kw: kw
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    fake.sampling_params = types.ModuleType("vllm.sampling_params")
    fake.sampling_params.StructuredOutputsParams = lambda **kw: ("structured_outputs", kw)
    fake.sampling_params.RequestOutputKind = types.SimpleNamespace(DELTA="delta")
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", fake.sampling_params)
    ScriptedLLM.started, ScriptedLLM.die, ScriptedLLM.seen = 0, False, []
    return str(write_random_model(tmp_path / "tiny", "tiny-llama"))


def test_rows_keep_their_order_and_bad_rows_fail_alone(scripted, monkeypatch):
    teacher = VLLMTeacher(scripted, max_model_len=64, sampling=SAMPLED)
    long = Request("long", ({"role": "user", "content": "many words " * 200},))
    bad = Request("bad", ({"role": "user", "content": "out of vocabulary"},))
    render = teacher._render
    monkeypatch.setattr(teacher, "_render", lambda r: [10**6] if r.id == "bad" else render(r))
    requests = [REQUESTS[0], long, REQUESTS[1], bad, *REQUESTS[2:]]
    got = teacher.generate(requests)
    assert [c.id for c in got] == [r.id for r in requests]
    assert [c.finish_reason for c in got] == [FINISH_LENGTH, FINISH_ERROR, FINISH_LENGTH, FINISH_ERROR] + [
        FINISH_LENGTH
    ] * (len(REQUESTS) - 2)
    assert "does not fit teacher.max_model_len=64" in got[1].error
    assert "out of vocabulary" in got[3].error and got[3].text == ""
    ok = [c for c in got if c.finish_reason != FINISH_ERROR]
    # Chat-templated prompts, per-request seeds, stripped texts, token counts from the engine.
    assert all(c.text == f"seed={request_seed(c.id, 3)} prompt={c.prompt_tokens}" for c in ok)
    assert all(c.prompt_tokens > 8 and c.completion_tokens == 16 for c in ok)


def test_a_structure_goes_to_the_engine_and_the_answer_is_checked(scripted):
    teacher = VLLMTeacher(scripted, sampling=SAMPLED)
    seen = ScriptedLLM.seen
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    requests = [Request("s", REQUESTS[0].messages, Structure.json(schema)), REQUESTS[1]]
    got = teacher.generate(requests)
    assert seen[0].structured_outputs == ("structured_outputs", {"json": schema})
    assert not hasattr(seen[1], "structured_outputs")
    assert got[0].invalid.startswith("not JSON") and got[1].invalid is None  # the scripted engine ignores it


def test_a_dead_engine_fails_its_requests_and_is_restarted_for_the_next(scripted):
    teacher = VLLMTeacher(scripted, sampling=SAMPLED)
    ScriptedLLM.die = True
    got = teacher.generate(REQUESTS)
    assert {c.finish_reason for c in got} == {FINISH_ERROR}
    assert all(c.error.startswith("vllm engine died: EngineDeadError") for c in got)
    ScriptedLLM.die = False
    assert {c.finish_reason for c in teacher.generate(REQUESTS)} == {FINISH_LENGTH}
    assert ScriptedLLM.started >= 2  # the requests after a death got a new engine


def test_requests_stream_in_and_tokens_are_counted_per_step(scripted):
    from generators.teachers.stream import Streamer

    teacher = VLLMTeacher(scripted, sampling=SAMPLED)
    stream = Streamer(teacher)
    steps = []
    add = stream.meter.add
    stream.meter.add = lambda n: steps.append(n) or add(n)
    got = [f.result(timeout=30) for f in stream.submit(REQUESTS)]
    assert stream.meter.tokens == sum(c.completion_tokens for c in got) == 16 * len(REQUESTS)
    assert steps.count(2) == 8 * len(REQUESTS)  # one count per streamed step, not one per answer


def test_engine_settings_for_cpu_and_gpu(scripted):
    cpu = VLLMTeacher(scripted, max_model_len=1024, sampling=SAMPLED).engine_args
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] >= 1024
    assert cpu["kv_cache_memory_bytes"] == 2 * 2**30 and cpu["dtype"] == "bfloat16"
    assert cpu["tensor_parallel_size"] == 1
    gpu = VLLMTeacher(scripted, num_gpus=2, engine_kwargs={"max_num_batched_tokens": 999}).engine_args
    assert gpu["enable_chunked_prefill"] is True and gpu["kv_cache_memory_bytes"] is None
    assert (
        gpu["tensor_parallel_size"] == 2 and gpu["dtype"] == "auto" and gpu["max_num_batched_tokens"] == 999
    )


def test_every_config_key_is_an_argument():
    from tests.pipeline.conftest import compose

    cfg = compose("teacher=vllm", "cluster.teacher_gpus=1")
    from generators.teachers.stream import STAGE_KEYS

    keys = set(cfg.teacher) - {"_target_", *STAGE_KEYS}  # the teacher stage's keys: conf/teacher/stage/
    assert keys == set(inspect.signature(VLLMTeacher).parameters)
    assert cfg.teacher.num_gpus == 1 and cfg.teacher.sampling.repetition_penalty == 1.1


# --- the real engine on the embedded teacher (.venv-vllm) -------------------------------------------


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("vllm")
    teacher = VLLMTeacher(
        "embedded:smollm2",
        dtype="float32",
        max_model_len=1024,
        kv_cache_gib=1,
        enforce_eager=True,
        sampling=SAMPLED,
    )
    yield teacher
    teacher.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_128_seeded_requests_in_one_call_and_a_text_depends_only_on_its_request(engine):
    # 128 prompts exceed one step's token budget: with chunked prefill vLLM's CPU engine died here
    # ("CPU Generator does not use offset") as soon as requests carried seeds.
    engine.sampling = SamplingParams(**{**SAMPLED, "max_new_tokens": 6})
    requests = [ask(i, f"{TOPICS[i % len(TOPICS)]}, part {i}") for i in range(128)]
    batch = engine.generate(requests)
    assert [c.id for c in batch] == [r.id for r in requests]
    assert {c.finish_reason for c in batch} <= {"stop", "length"} and all(c.text for c in batch)
    alone = engine.generate(requests[5:8])
    assert [c.text for c in alone] == [c.text for c in batch[5:8]]
    engine.sampling = SamplingParams(**{**SAMPLED, "max_new_tokens": 6, "seed": 4})
    reseeded = engine.generate(requests[:16])
    assert sum(a.text != b.text for a, b in zip(reseeded, batch[:16])) >= 8


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_texts_match_the_hf_teacher(engine):
    from generators.teachers.hf import HFTeacher

    greedy = dict(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0)
    engine.sampling = SamplingParams(**greedy)
    hf = HFTeacher("embedded:smollm2", device="cpu", dtype="float32", batch_size=4, sampling=greedy)
    ours, theirs = engine.generate(REQUESTS[:4]), hf.generate(REQUESTS[:4])
    assert [c.prompt_tokens for c in ours] == [c.prompt_tokens for c in theirs]  # the same chat template
    same = sum(a.text == b.text for a, b in zip(ours, theirs))
    assert same >= 3, [(a.text, b.text) for a, b in zip(ours, theirs)]


@pytest.mark.vllm
@pytest.mark.slow
def test_rows_the_engine_refuses_fail_alone(engine, monkeypatch):
    engine.sampling = SamplingParams(**{**SAMPLED, "max_new_tokens": 4})
    render = engine._render
    monkeypatch.setattr(engine, "_render", lambda r: [10**6] if r.id == "q2" else render(r))
    got = engine.generate(REQUESTS)
    assert [c.finish_reason == FINISH_ERROR for c in got] == [i == 2 for i in range(len(REQUESTS))]
    assert "vocab" in got[2].error.lower() and all(c.text for i, c in enumerate(got) if i != 2)


@pytest.mark.vllm
@pytest.mark.slow
def test_the_engine_holds_answers_to_a_schema_and_a_regex(engine):
    engine.sampling = SamplingParams(**{**SAMPLED, "max_new_tokens": 24})
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["score"], "additionalProperties": False}  # fmt: skip
    requests = [
        Request(
            "j", ({"role": "user", "content": "Rate tides from 1 to 5 as JSON."},), Structure.json(schema)
        ),
        Request("r", ({"role": "user", "content": "Is the sea salty?"},), Structure(regex="(yes|no)")),
    ]
    got = engine.generate(requests)
    assert got[0].invalid is None and 1 <= json.loads(got[0].text)["score"] <= 5, got[0].text
    assert got[1].text in ("yes", "no") and got[1].invalid is None
