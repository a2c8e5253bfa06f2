"""FastTeacher against transformers generate(): same greedy tokens, same stops, on tiny random models."""

from __future__ import annotations

import pytest
import torch

from generators.teachers.contract import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, Request, cut_at_stop
from generators.teachers.fast import FastTeacher
from generators.teachers.fast.engine import FastEngine
from generators.teachers.hf import HFTeacher
from tests.helpers.random_models import random_model, write_random_model

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "Hi",
    "Tell me a story about a cat.",
    "Numbers?",
    "Rain " * 20,
    "The quick brown fox jumps over the dog",
]
REQUESTS = [Request(f"r{i}", ({"role": "user", "content": q},)) for i, q in enumerate(QUESTIONS)]
GREEDY = dict(max_new_tokens=24, temperature=0.0)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen2"])
def model_dir(request, tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp(request.param), request.param)


def hf_reference(model, prompt: list[int], max_new: int, **kw) -> list[int]:
    """Unpadded single-prompt generate(): the reference a batched backend must reproduce."""
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=0,
        **kw,
    )
    return out[0, len(prompt) :].tolist()


def prompts(n: int = 9, vocab: int = 384) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, vocab, (length,), generator=g).tolist()
        for length in (5, 17, 9, 30, 1, 64, 70, 3, 12)[:n]
    ]


def test_greedy_text_matches_hf_teacher(model_dir):
    # max_batch=2 < 5 requests: rows finish and slots are refilled mid-run.
    fast = FastTeacher(
        str(model_dir), device="cpu", sampling=GREEDY, max_batch=2, prompt_bucket=8, sync_every=5
    )
    hf = HFTeacher(str(model_dir), device="cpu", batch_size=1, sampling=GREEDY)
    got, want = fast.generate(REQUESTS), hf.generate(REQUESTS)
    assert fast.backend == "fast"
    assert [(c.id, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in got] == [
        (c.id, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in want
    ]
    assert any(c.text for c in got)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-qwen2"])
def test_greedy_tokens_match_generate_with_refill_and_compaction(shape):
    model = random_model(shape, vocab_size=384, init_std=0.5)
    engine = FastEngine(model, max_batch=4, prompt_bucket=16, sync_every=3)
    limits = [1, 2, 3, 30, 5, 6, 7, 8, 40]
    results = engine.generate(prompts(), limits)
    for p, m, r in zip(prompts(), limits, results, strict=True):
        assert r.tokens == hf_reference(model, p, m, eos_token_id=None)
        assert r.finish == "length"
    assert engine.stats["compactions"] >= 1 and engine.stats["prefills"] >= 3


def test_eos_stops_each_row_like_generate():
    model = random_model("tiny-llama", vocab_size=384, init_std=0.5)
    engine = FastEngine(model, max_batch=4, prompt_bucket=16)
    eos = engine.generate(prompts(), 25)[0].tokens[6]  # a token the model does produce
    results = engine.generate(prompts(), 25, eos_ids=[eos])
    finishes = set()
    for p, r in zip(prompts(), results, strict=True):
        ref = hf_reference(model, p, 25, eos_token_id=eos)
        assert r.tokens == (ref[: ref.index(eos)] if eos in ref else ref)
        assert r.finish == ("eos" if eos in ref else "length")
        finishes.add(r.finish)
    assert finishes == {"eos", "length"}


def test_repetition_penalty_matches_generate():
    model = random_model("tiny-llama", vocab_size=384, init_std=0.5)
    results = FastEngine(model, max_batch=8).generate(prompts(), 15, repetition_penalty=1.5)
    assert [r.tokens for r in results] == [
        hf_reference(model, p, 15, repetition_penalty=1.5, eos_token_id=None) for p in prompts()
    ]


def test_sliding_window_matches_generate():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=384, sliding_window=8, initializer_range=0.5,
    )  # fmt: skip
    model = MistralForCausalLM(config).eval()
    results = FastEngine(model, max_batch=8, prompt_bucket=16).generate(prompts(), 20)
    assert [r.tokens for r in results] == [hf_reference(model, p, 20, eos_token_id=None) for p in prompts()]


def test_stop_strings_cut_text_and_end_rows_early(tmp_path):
    model_dir = write_random_model(tmp_path, "tiny-llama")
    long = dict(max_new_tokens=60, temperature=0.0)
    base = FastTeacher(str(model_dir), device="cpu", sampling=long).generate(REQUESTS)
    stop = base[1].text[10:13]  # occurs in row 1 after ~10 characters
    assert stop.strip()
    teacher = FastTeacher(str(model_dir), device="cpu", sampling=dict(long, stop=[stop]), sync_every=4)
    got = teacher.generate(REQUESTS)
    for before, after in zip(base, got, strict=True):
        expected, found = cut_at_stop(before.text, [stop])
        assert after.text == expected.strip()
        if found:
            assert after.finish_reason == FINISH_STOP
    assert got[1].finish_reason == FINISH_STOP and stop not in got[1].text
    assert got[1].completion_tokens < 60  # ended at a host check, not at max_new_tokens


def test_max_new_tokens_and_too_long_prompt_fail_alone(tmp_path):
    model_dir = write_random_model(tmp_path, "tiny-llama")
    teacher = FastTeacher(
        str(model_dir), device="cpu", sampling=dict(max_new_tokens=7, temperature=0.0), max_seq_len=40
    )
    got = teacher.generate(REQUESTS)
    assert got[3].finish_reason == FINISH_ERROR and "max_seq_len" in got[3].error
    for c in got[:3] + got[4:]:
        assert c.finish_reason in (FINISH_LENGTH, FINISH_STOP) and c.completion_tokens <= 7
    assert any(c.finish_reason == FINISH_LENGTH and c.completion_tokens == 7 for c in got)


def test_sampling_is_seeded_and_warpers_hold():
    model = random_model("tiny-llama", vocab_size=384, init_std=0.5)
    engine = FastEngine(model, max_batch=4, prompt_bucket=16)
    sample = dict(temperature=0.9, top_p=0.9, top_k=50)
    first = [r.tokens for r in engine.generate(prompts(), 20, seed=3, **sample)]
    assert first == [r.tokens for r in engine.generate(prompts(), 20, seed=3, **sample)]
    assert first != [r.tokens for r in engine.generate(prompts(), 20, seed=4, **sample)]
    greedy = [r.tokens for r in engine.generate(prompts(), 20)]
    assert first != greedy
    # A warper that leaves one candidate makes sampling greedy, whatever the noise.
    assert [r.tokens for r in engine.generate(prompts(), 20, temperature=1.0, top_k=1, seed=5)] == greedy
    assert [r.tokens for r in engine.generate(prompts(), 20, temperature=1.0, top_p=1e-6, seed=5)] == greedy


def test_unsupported_architecture_falls_back_to_hf(tmp_path, caplog):
    model_dir = write_random_model(tmp_path, "tiny-gpt2")
    with caplog.at_level("WARNING"):
        teacher = FastTeacher(str(model_dir), device="cpu", sampling=dict(max_new_tokens=5, temperature=0.0))
    assert teacher.backend == "hf" and "gpt2" in teacher.fallback_reason
    assert "using the hf backend" in caplog.text
    got = teacher.generate(REQUESTS[:2])
    assert [c.finish_reason for c in got] != [FINISH_ERROR] * 2


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-qwen2"])
def test_decode_step_reads_no_values_on_the_host(shape):
    """CUDA-graph safety checked on CPU: the step runs on meta tensors, which hold no values, so any
    ``.item()``, ``.tolist()`` or data-dependent shape in it would raise here."""
    from generators.teachers.fast.sampling import SamplingMode
    from generators.teachers.fast.state import RowState

    engine = FastEngine(random_model(shape, vocab_size=384).to("meta"), max_batch=8)
    engine.graphs.enabled = True  # what a captured step runs (engine.step itself is never replayed here)
    with torch.inference_mode():
        engine.dec.allocate(8, 128)
        modes = (
            SamplingMode.of(0.0, 0, 1.0, 1.0),
            SamplingMode.of(0.7, 50, 0.9, 1.2),
            SamplingMode.of(0.7, 0, 0.9, 1.2),
        )
        for mode in modes:
            engine.mode = mode
            engine.state = RowState(8, 32, 384, torch.device("meta"), 128, mode.penalty)
            engine.step(8, 64)
            assert engine.state.out.is_meta


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_eager():
    model = random_model("tiny-llama", vocab_size=384, init_std=0.5).cuda()
    kw = dict(max_batch=4, prompt_bucket=16, sync_every=3)
    graphs = FastEngine(model, use_cuda_graphs=True, **kw)
    eager = FastEngine(model, use_cuda_graphs=False, **kw)
    for sampling in (dict(), dict(temperature=0.9, top_p=0.9, top_k=50, seed=3, repetition_penalty=1.2)):
        a = graphs.generate(prompts(), [5, 9, 30, 2, 17, 8, 40, 3, 12], **sampling)
        b = eager.generate(prompts(), [5, 9, 30, 2, 17, 8, 40, 3, 12], **sampling)
        assert [r.tokens for r in a] == [r.tokens for r in b]
    assert graphs.stats["graphs"] > 0


@pytest.mark.slow
def test_embedded_smollm2_greedy_matches_hf_teacher():
    sampling = dict(max_new_tokens=48, temperature=0.0)
    requests = [Request(f"s{i}", ({"role": "user", "content": q},)) for i, q in enumerate(QUESTIONS[:3])]
    fast = FastTeacher("embedded:smollm2", device="cpu", sampling=sampling, max_batch=2)
    want = HFTeacher("embedded:smollm2", device="cpu", batch_size=1, sampling=sampling).generate(requests)
    assert fast.backend == "fast"
    assert [(c.text, c.finish_reason) for c in fast.generate(requests)] == [
        (c.text, c.finish_reason) for c in want
    ]
