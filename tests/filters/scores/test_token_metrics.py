"""TokenMetrics against values computed directly with each tokenizer, one text at a time, on real text."""

from __future__ import annotations

import functools
import gzip
import io
import random
import re

import numpy as np
import pytest

from filters.scores.token_metrics import TokenMetrics
from filters.tokenizers import load_target_tokenizer
from generators.errors import ConfigError

EXTRA = ["naïve café, 東京 ☃ — ok", "", "   ", "x", "a\tb\nc  d"]  # non-ASCII (byte fallback) and edge cases


def lines_of(texts: list[str]) -> list[str]:
    return [line.strip() for text in texts for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def sp_model(real_texts, tmp_path_factory) -> str:
    import sentencepiece as spm

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines_of(real_texts)),
        model_writer=proto,
        vocab_size=500,
        byte_fallback=True,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("sp") / "target.model"
    path.write_bytes(proto.getvalue())
    return str(path)


@pytest.fixture(scope="module")
def bpe_dir(real_texts, tmp_path_factory) -> str:
    """A byte-level BPE tokenizer (GPT-2 style, like SmolLM2's) saved as a tokenizer-only directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(lines_of(real_texts), trainer)
    where = tmp_path_factory.mktemp("bpe")
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>").save_pretrained(where)
    return str(where)


def deflate_size(data: bytes) -> int:
    """gzip's DEFLATE payload: the member minus its 10-byte header and 8-byte trailer."""
    return len(gzip.compress(data, compresslevel=9, mtime=0)) - 18


def common_expectations(text: str, n_tokens: int, n_split: int, fallback: int, unknown: int) -> dict:
    words = re.findall(r"\S+", text)
    data = text.encode("utf-8")
    return {
        "n_tokens": n_tokens,
        "n_words": len(words),
        "chars_per_token": len(text) / max(n_tokens, 1),
        "bytes_per_token": len(data) / max(n_tokens, 1),
        "fertility": n_tokens / max(len(words), 1),
        "pcw": n_split / max(len(words), 1),
        "byte_fallback_rate": fallback / max(n_tokens, 1),
        "unk_rate": unknown / max(n_tokens, 1),
        "gzip_ratio": deflate_size(data) / len(data) if data else np.nan,
    }


def split_count(word_of: list[int], spans, n_words: int) -> int:
    """Words covered by two or more token spans; ``word_of[c]`` is the word index of unit ``c`` (or -1)."""
    hits = [0] * n_words
    for s, e in spans:
        for w in {word_of[c] for c in range(s, e)} - {-1}:
            hits[w] += 1
    return sum(h >= 2 for h in hits)


def word_index(units: int, words: list[tuple[int, int]]) -> list[int]:
    word_of = [-1] * units
    for w, (s, e) in enumerate(words):
        word_of[s:e] = [w] * (e - s)
    return word_of


@functools.cache
def not_whole_utf8(tok, token_id: int) -> bool:
    """A token whose bytes do not decode on their own: the decoder puts U+FFFD in their place."""
    return "\ufffd" in tok.decode([token_id])


def expected_hf(tok, text: str) -> dict:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    words = [m.span() for m in re.finditer(r"\S+", text)]  # character spans
    n_split = split_count(word_index(len(text), words), spans, len(words))
    fallback = sum(not_whole_utf8(tok, i) for i in ids)
    unknown = sum(i == tok.unk_token_id for i in ids)
    return common_expectations(text, len(ids), n_split, fallback, unknown)


def expected_sp(sp, text: str) -> dict:
    pieces = sp.encode(text, out_type="proto").pieces  # begin/end: byte offsets into the text
    data = text.encode("utf-8")
    at = [len(text[:c].encode("utf-8")) for c in range(len(text) + 1)]  # character -> byte offset
    words = [(at[m.start()], at[m.end()]) for m in re.finditer(r"\S+", text)]
    # The leading byte pieces of a character come back empty; they belong to that character.
    spans = [(p.begin, p.end + (sp.is_byte(p.id) and p.begin == p.end)) for p in pieces]
    n_split = split_count(word_index(len(data), words), spans, len(words))
    fallback = sum(sp.is_byte(p.id) for p in pieces)
    unknown = sum(sp.is_unknown(p.id) for p in pieces)
    return common_expectations(text, len(pieces), n_split, fallback, unknown)


def check(out: dict, texts: list[str], expect) -> None:
    for row, text in enumerate(texts):
        for name, value in expect(text).items():
            np.testing.assert_allclose(out[name][row], value, rtol=1e-12, err_msg=f"{name}: {text[:40]!r}")


def test_sentencepiece_metrics_match_direct_computation(real_texts, sp_model):
    import sentencepiece as spm

    texts = [t[:3000] for t in real_texts] + lines_of(real_texts[:2])[:40] + EXTRA
    out = TokenMetrics(tokenizer=sp_model)({"text": np.array(texts, dtype=object)})
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    check(out, texts, lambda t: expected_sp(sp, t))
    assert out["byte_fallback_rate"][len(texts) - len(EXTRA)] > 0
    assert 0 < np.mean(out["pcw"][: len(real_texts)]) < 1


def test_byte_level_bpe_metrics_match_direct_computation(real_texts, bpe_dir):
    from transformers import AutoTokenizer

    texts = [t[:3000] for t in real_texts] + EXTRA
    tok = AutoTokenizer.from_pretrained(bpe_dir)
    for spec in (bpe_dir, f"{bpe_dir}/tokenizer.json"):
        out = TokenMetrics(tokenizer=spec)({"text": texts})
        check(out, texts, lambda t: expected_hf(tok, t))
        assert (
            out["byte_fallback_rate"][len(texts) - len(EXTRA)] > 0
        )  # "東京" and "☃" are split into raw bytes


@pytest.mark.slow
def test_embedded_tokenizer_metrics_match_direct_computation(real_texts):
    from generators.teachers.models import load_tokenizer

    texts = [t[:3000] for t in real_texts[:8]] + EXTRA
    out = TokenMetrics(tokenizer="embedded:smollm2")({"text": texts})
    tok = load_tokenizer("embedded:smollm2")
    check(out, texts, lambda t: expected_hf(tok, t))


@pytest.mark.parametrize("spec", ["sp", pytest.param("embedded:smollm2", marks=pytest.mark.slow)])
def test_noise_and_repetition_rank_as_expected(real_texts, sp_model, spec):
    rng = random.Random(0)
    prose = real_texts[0][:600]
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzQXZ0123456789#%&") for _ in range(len(prose)))
    out = TokenMetrics(tokenizer=sp_model if spec == "sp" else spec)(
        {"text": [prose, noise, " ".join([prose] * 5)]}
    )
    assert out["chars_per_token"][1] < out["chars_per_token"][0]
    assert out["gzip_ratio"][1] > out["gzip_ratio"][0] > out["gzip_ratio"][2]


def test_bad_specs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="filters.tokenizer"):
        load_target_tokenizer(str(tmp_path / "missing.model"))
    with pytest.raises(ConfigError, match="tokenizer.json"):
        load_target_tokenizer(str(tmp_path))


def _same_tokens(a, b, texts):
    ids_a, spans_a = a.encode_offsets(texts)
    ids_b, spans_b = b.encode_offsets(texts)
    assert ids_a == ids_b == a.encode(texts) == b.encode(texts)
    assert all(np.array_equal(x, y) for x, y in zip(spans_a, spans_b))
    assert (a.unk_id, a.eos_id) == (b.unk_id, b.eos_id)
    assert np.array_equal(a.is_byte_fallback, b.is_byte_fallback) and a.is_byte_fallback.any()


@pytest.mark.parametrize("which", ["bpe", pytest.param("embedded", marks=pytest.mark.slow)])
def test_tokenizers_library_reads_tokenizer_json_as_transformers_does(real_texts, bpe_dir, which):
    """The scorer reads tokenizer.json with `tokenizers` alone (no transformers/torch import);
    it must give the tokens, spans, special ids and byte-fallback table transformers gives."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from filters.tokenizers import HFTarget, TokenizersTarget
    from generators.teachers.models import materialize, resolve

    folder = (
        Path(bpe_dir) if which == "bpe" else materialize(resolve("embedded:smollm2", "filters.tokenizer"))
    )
    texts = [t[:3000] for t in real_texts[:6]] + EXTRA
    fast = TokenizersTarget(folder / "tokenizer.json")
    _same_tokens(fast, HFTarget(AutoTokenizer.from_pretrained(folder)), texts)
    if which == "embedded":
        assert isinstance(load_target_tokenizer("embedded:smollm2"), TokenizersTarget)
        assert fast.eos_id is not None
