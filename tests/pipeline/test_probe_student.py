"""The student: vocabulary compaction, exact bits per byte, and training that lowers the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.probe import student
from pipeline.probe.student import SEPARATOR, StudentConfig

TINY = StudentConfig(
    hidden_size=32, layers=1, heads=2, intermediate_size=64, seq_len=16, batch_size=4, dtype="fp32"
)


def test_vocab_keeps_every_token_present_and_nothing_else():
    pool = np.array([5, 5, 5, 9, 9, 100])
    vocab = student.build_vocab(pool, [np.array([7, 5])], max_vocab=None)
    assert vocab.size == 5 and vocab.rare_id is None  # separator + {5, 9, 100, 7}
    assert list(vocab.encode([5, 9, 100, 7])) == [1, 2, 3, 4]  # by pool frequency, eval-only tokens last
    assert SEPARATOR not in vocab.encode(pool)


def test_vocab_beyond_max_shares_a_rare_class():
    pool = np.array([1] * 5 + [2] * 4 + [3] * 3 + [4] * 2 + [6])
    vocab = student.build_vocab(pool, [np.array([8])], max_vocab=4)  # separator, 2 own ids, rare
    assert vocab.size == 4 and vocab.rare_id == 3
    assert list(vocab.encode([1, 2, 3, 4, 6, 8])) == [1, 2, 3, 3, 3, 3]
    assert vocab.rare_members == 4 and vocab.distinct == 6


def test_windows_predict_every_token_once():
    doc = np.arange(1, 40)
    pieces = student.windows(doc, seq_len=16)
    predicted = np.concatenate([p[1:] for p in pieces])
    assert list(predicted) == list(doc)
    assert all(len(p) <= 17 for p in pieces) and pieces[0][0] == SEPARATOR


def test_a_uniform_student_scores_log2_vocab_bits_per_token():
    import torch

    pool = np.arange(1, 301) % 60 + 1  # 60 distinct tokens
    vocab = student.build_vocab(pool, [], max_vocab=41)  # 39 own ids, 21 tokens in the rare class
    model = student.build_student(vocab.size, TINY, seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: the embeddings too; every logit 0 -> uniform
    docs = [vocab.encode(pool[:50]), vocab.encode(pool[50:77])]
    n_bytes = 123
    rare = sum(int((d == vocab.rare_id).sum()) for d in docs)
    expected = (77 * math.log(vocab.size) + rare * math.log(vocab.rare_members)) / math.log(2) / n_bytes
    assert student.bits_per_byte(model, docs, n_bytes, vocab, TINY) == pytest.approx(expected, rel=1e-5)


def test_training_learns_a_repeating_stream_and_is_deterministic():
    pattern = np.array([SEPARATOR, *range(1, 12)])
    stream = np.tile(pattern, 200)
    vocab = student.build_vocab(stream[stream > 0], [], None)
    cfg = StudentConfig(**{**TINY.__dict__, "lr": 1e-2})
    model, stats = student.train_student(stream, vocab.size, cfg, seed=1)
    docs = [np.arange(1, 12)] * 4
    trained = student.bits_per_byte(model, docs, 44, vocab, cfg)
    untrained = student.bits_per_byte(student.build_student(vocab.size, cfg, seed=1), docs, 44, vocab, cfg)
    assert trained < 0.3 * untrained
    assert stats["train_tokens"] == len(stream) // 16 * 16 and stats["steps"] == math.ceil(
        len(stream) // 16 / 4
    )
    _, again = student.train_student(stream, vocab.size, cfg, seed=1)
    assert again["final_loss"] == stats["final_loss"]


def test_parameter_count_matches_the_model():
    cfg = StudentConfig(hidden_size=64, layers=2, heads=4, intermediate_size=128, seq_len=32)
    model = student.build_student(500, cfg, seed=0)
    assert student.parameter_count(500, cfg) == sum(p.numel() for p in model.parameters())


def test_dtype_choice():
    assert student.resolve_dtype("fp32", "cuda") == "fp32"
    assert student.resolve_dtype("auto", "cuda") == "bf16"
    flags = open("/proc/cpuinfo").read()
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert student.resolve_dtype("auto", "cpu") == ("bf16" if native else "fp32")
