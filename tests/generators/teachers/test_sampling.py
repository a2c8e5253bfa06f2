"""litho's sampler: counter draws, exact prefiltered top-p, the distribution transformers' warpers define."""

from __future__ import annotations

import pytest
import torch

from generators.teachers import sampling
from generators.teachers.sampling import Warpers, choose, penalize, row_key, split_keys, uniforms


def _fmix32(h: int) -> int:
    """murmur3's 32-bit finaliser in plain Python integers: the reference for the tensor version."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_uniforms_are_the_counter_hash_of_key_and_step():
    keys = [row_key(f"req-{i}", 7) for i in range(50)] + [0, 2**64 - 1]
    steps = torch.arange(len(keys)) * 97 + 3
    got = uniforms(split_keys(keys), steps).tolist()
    for key, step, u in zip(keys, steps.tolist(), got, strict=True):
        h = _fmix32((key & 0xFFFFFFFF) ^ ((step * 0x9E3779B1) & 0xFFFFFFFF))
        h = _fmix32(h ^ (key >> 32))
        assert u == (h >> 8) / 2**24


def test_uniforms_look_uniform_and_differ_by_seed():
    words = split_keys([row_key("one request", 0)] * 20000)
    u = uniforms(words, torch.arange(20000))
    assert 0 <= u.min() and u.max() < 1
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert (counts - 2000).abs().max() < 200  # ~4.5 sigma for a binomial(20000, 0.1)
    assert row_key("a", 0) != row_key("a", 1) != row_key("b", 1)


def _logits(rows: int, vocab: int, scale: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])  # flat (prefilter too short) to peaked (it suffices)
def test_prefiltered_top_p_gives_the_tokens_of_the_full_sort(scale):
    logits = _logits(64, 5000, scale)
    u = uniforms(split_keys([row_key(str(i), 0) for i in range(64)]), torch.full((64,), 3))
    w = Warpers(temperature=0.7, top_p=0.9)
    full = choose(logits, w, u, host_checks=False)
    assert torch.equal(choose(logits, w, u), full)


def test_a_row_gets_the_same_token_alone_or_in_a_batch():
    logits = torch.cat([_logits(16, 3000, 0.5), _logits(16, 3000, 10.0, seed=1)])
    u = uniforms(split_keys([row_key(str(i), 0) for i in range(32)]), torch.arange(32))
    for w in (Warpers(0.7, 0, 0.9), Warpers(1.0, 40, 0.95), Warpers(0.8), Warpers(0.0)):
        batched = choose(logits, w, u)
        alone = torch.cat([choose(logits[i : i + 1], w, u[i : i + 1]) for i in range(32)])
        assert torch.equal(batched, alone), w


def _reference_probs(logits: torch.Tensor, w: Warpers) -> torch.Tensor:
    """The distribution transformers' temperature, top-k and top-p warpers leave for one row."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    scores = TemperatureLogitsWarper(w.temperature)(None, logits[None].clone())
    if w.top_k:
        scores = TopKLogitsWarper(w.top_k)(None, scores)
    if w.top_p < 1:
        scores = TopPLogitsWarper(w.top_p)(None, scores)
    return scores.softmax(-1)[0]


@pytest.mark.parametrize("w", [Warpers(0.7, 0, 0.9), Warpers(1.3, 8, 0.8), Warpers(0.9), Warpers(1.0, 5)])
def test_draws_follow_the_warped_distribution(w):
    vocab, draws = 50, 40000
    logits = _logits(1, vocab, 2.0, seed=4)[0]
    u = uniforms(split_keys([row_key("r", 1)] * draws), torch.arange(draws))
    tokens = choose(logits.expand(draws, vocab), w, u)
    freq = torch.bincount(tokens, minlength=vocab).double() / draws
    want = _reference_probs(logits, w).double()
    assert freq[want == 0].sum() == 0  # never a token the warpers remove
    assert (freq - want).abs().sum() / 2 < 0.015  # total variation; sampling noise alone is ~0.005


def test_penalty_matches_transformers_processor():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits, seen = _logits(4, 300, 3.0), torch.randint(0, 300, (4, 40))
    want = RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone())
    assert torch.equal(penalize(logits, seen, 1.3), want)


def test_greedy_is_argmax_and_top_k_one_is_greedy():
    logits = _logits(8, 1000, 2.0)
    u = uniforms(split_keys(list(range(8))), torch.zeros(8, dtype=torch.long))
    assert torch.equal(choose(logits, Warpers(0.0), u), logits.argmax(-1))
    assert torch.equal(choose(logits, Warpers(1.0, 1), u), logits.argmax(-1))
    assert torch.equal(choose(logits, Warpers(1.0, 0, 1e-6), u), logits.argmax(-1))


def test_prefilter_is_used_only_when_its_mass_covers_top_p(monkeypatch):
    calls = []
    real_sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **k: calls.append(a[0].shape) or real_sort(*a, **k))
    u = uniforms(split_keys(list(range(4))), torch.zeros(4, dtype=torch.long))
    choose(_logits(4, 5000, 12.0), Warpers(0.7, 0, 0.9), u)  # peaked: 64 candidates hold 90%
    assert calls == []
    flat = _logits(4, 5000, 12.0)
    flat[1] = 0.0  # one flat row needs the full sort, alone
    choose(flat, Warpers(0.7, 0, 0.9), u)
    assert calls == [torch.Size([1, 5000])]
    assert sampling.PREFILTER < 5000
