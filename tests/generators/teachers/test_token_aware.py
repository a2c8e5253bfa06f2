"""Token-aware generation: the student-cost table, the bias, and the hf / fast wiring."""

from __future__ import annotations

import re

import numpy as np
import pytest

from generators.errors import ConfigError
from generators.teachers import token_aware as ta
from generators.teachers.contract import Request
from generators.tokenizers import load_target_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = dict(max_new_tokens=24, temperature=0.0)
REQUESTS = [Request(f"r{i}", ({"role": "user", "content": f"Tell me about rivers {i}"},)) for i in range(4)]


def _pydoc_lines() -> list[str]:
    from pydoc_data.topics import topics

    return [ln for k in sorted(topics) for ln in topics[k].splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def sp_target(tmp_path_factory) -> str:
    """A SentencePiece student tokenizer (byte fallback on) trained on Python's pydoc topics."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("sp") / "student"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_pydoc_lines()),
        model_prefix=str(prefix),
        vocab_size=1000,
        byte_fallback=True,
        minloglevel=2,
    )
    return f"{prefix}.model"


@pytest.fixture(scope="module")
def word_teacher():
    """A byte-level BPE teacher tokenizer trained on pydoc topics: many real words are one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_pydoc_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def test_settings_name_the_key_and_the_fix():
    with pytest.raises(
        ConfigError, match=r"teacher\.token_aware\.target=null: .*set teacher\.token_aware\.target"
    ):
        ta.TokenAware.from_config({"strength": 1.0})
    with pytest.raises(ConfigError, match=r"teacher\.token_aware\.target=null"):
        ta.TokenAware.from_config({"ban_byte_fallback": True})
    with pytest.raises(ConfigError, match=r"teacher\.token_aware\.strength=-1: give a number >= 0"):
        ta.TokenAware.from_config({"strength": -1, "target": "x.model"})
    with pytest.raises(ConfigError, match=r"unknown keys \['strenght'\]"):
        ta.TokenAware.from_config({"strenght": 1.0})
    off = ta.TokenAware.from_config({"strength": 0.0, "target": None})
    assert not off.active and off.record() == {}
    on = ta.TokenAware.from_config({"strength": 2, "target": "s.model"})
    assert on.record() == {"token_aware": {"strength": 2.0, "target": "s.model", "ban_byte_fallback": False}}


def test_cost_table_equals_direct_tokenization_of_real_words(word_teacher, sp_target):
    """For every pydoc word that is one teacher token, the table is the target's own count, exactly."""
    target = load_target_tokenizer(sp_target)
    table = ta.compute_table(word_teacher, target)
    words = sorted({w for ln in _pydoc_lines() for w in re.findall(r"[A-Za-z]{2,}", ln)})
    checked = 0
    for word in words:
        for text, col in ((" " + word, "spaced"), (word, "bare")):
            ids = word_teacher(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                continue
            pieces = target.sp.encode(text, out_type=str)
            direct = target.encode([text])[0]
            if col == "bare" and pieces and pieces[0] == "\u2581":
                direct = direct[1:]  # the dummy prefix a continuation never gets
            assert table[col][ids[0]] == len(direct), (text, pieces)
            assert table["cost"][ids[0]] == len(direct), text
            assert table["fallback"][ids[0]] == int(target.is_byte_fallback[direct].sum())
            checked += 1
    assert checked > 1000  # a real vocabulary, not a handful
    assert set(np.unique(table["cost"])) > {1, 2, 3}  # the table is not constant


def test_byte_fallback_and_unknown_pieces_are_counted_apart(word_teacher, sp_target):
    target = load_target_tokenizer(sp_target)
    table = ta.compute_table(word_teacher, target)
    pieces, whole = ta.teacher_pieces(word_teacher)
    rare = [i for i, p in enumerate(pieces) if whole[i] and not table["neutral"][i] and max(p) > 127]
    assert rare  # teacher tokens holding characters outside ASCII
    for i in rare:
        text = pieces[i].decode()
        ids = np.asarray(target.encode([text if table["space"][i] else text.lstrip(" ")])[0])
        assert table["fallback"][i] == target.is_byte_fallback[ids].sum(), text
        assert table["unknown"][i] == (ids == target.unk_id).sum(), text
    assert (table["fallback"] > 0).sum() > 0 and (table["fallback"] < table["cost"] + 1).all()
    # Partial UTF-8 pieces and specials are neutral (cost 1), never counted as fallback.
    assert (table["cost"][table["neutral"]] == 1).all() and (table["fallback"][table["neutral"]] == 0).all()
    assert table["neutral"][word_teacher.eos_token_id]
    bias = ta.bias_vector(table, ta.TokenAware(1.0, sp_target, ban_byte_fallback=True), len(word_teacher) + 5)
    n = len(table["cost"])
    assert np.isneginf(bias[:n][table["fallback"] > 0]).all()
    assert (bias[n:] == 0).all()  # padded logits rows
    ok = table["fallback"] == 0
    assert np.allclose(bias[:n][ok], -np.maximum(table["cost"][ok] - 1, 0))


def test_table_is_cached_by_both_vocabularies(word_teacher, sp_target, tmp_path):
    target = load_target_tokenizer(sp_target)
    first = ta.cost_table(word_teacher, target, tmp_path)
    files = list((tmp_path / "token_aware").glob("*.npz"))
    assert len(files) == 1
    again = ta.cost_table(word_teacher, target, tmp_path)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    from tests.helpers.random_models import chat_tokenizer

    ta.cost_table(chat_tokenizer(), target, tmp_path)  # another teacher vocabulary: another file
    assert len(list((tmp_path / "token_aware").glob("*.npz"))) == 2


def test_per_token_sum_is_close_to_whole_texts(word_teacher, sp_target, real_texts):
    target = load_target_tokenizer(sp_target)
    table = ta.compute_table(word_teacher, target)
    gap = ta.approximation_gap(word_teacher, target, table, real_texts)
    assert gap["true"] > 10_000
    assert 0.8 < gap["ratio"] < 1.5  # an estimate, not exact: merges across teacher tokens differ


def test_logit_bias_map_keeps_the_most_penalised(word_teacher, sp_target):
    table = ta.compute_table(word_teacher, load_target_tokenizer(sp_target))
    top = ta.logit_bias_map(table, ta.TokenAware(0.5, sp_target), top_n=50)
    assert len(top) == 50
    worst = -0.5 * (table["cost"].max() - 1)
    assert min(top.values()) == pytest.approx(worst)
    assert all(v < 0 for v in top.values())


@pytest.mark.parametrize("backend", ["hf", "fast"])
def test_strength_zero_keeps_greedy_texts_and_strength_moves_to_cheaper_tokens(
    backend, model_dir, sp_target, tmp_path
):
    from generators.teachers.fast import FastTeacher
    from generators.teachers.hf import HFTeacher

    cls = HFTeacher if backend == "hf" else FastTeacher
    kw = dict(device="cpu", sampling=GREEDY, cache_dir=str(tmp_path))
    plain = cls(model_dir, **kw)
    zero = cls(model_dir, token_aware=dict(strength=0.0, target=sp_target), **kw)
    strong = cls(model_dir, token_aware=dict(strength=3.0, target=sp_target), **kw)
    assert zero.logit_bias is not None if backend == "hf" else zero.engine.logit_bias is not None
    base = plain.generate(REQUESTS)
    assert [c.text for c in zero.generate(REQUESTS)] == [c.text for c in base]
    steered = strong.generate(REQUESTS)
    assert strong.sampling_extra["token_aware"]["strength"] == 3.0 and plain.sampling_extra == {}
    table = ta.cost_table(plain.tokenizer, load_target_tokenizer(sp_target), tmp_path)

    def mean_cost(completions):
        ids = plain.tokenizer([c.text for c in completions], add_special_tokens=False)["input_ids"]
        return np.concatenate([table["cost"][i] for i in ids]).mean()

    assert mean_cost(steered) < mean_cost(base) - 0.1


def test_hf_and_fast_agree_with_the_bias_on(model_dir, sp_target, tmp_path):
    from generators.teachers.fast import FastTeacher
    from generators.teachers.hf import HFTeacher

    kw = dict(device="cpu", sampling=GREEDY, cache_dir=str(tmp_path))
    aware = dict(strength=1.5, target=sp_target, ban_byte_fallback=True)
    hf = HFTeacher(model_dir, batch_size=1, token_aware=aware, **kw).generate(REQUESTS)
    fast = FastTeacher(model_dir, token_aware=aware, max_batch=2, prompt_bucket=8, **kw).generate(REQUESTS)
    assert [c.text for c in hf] == [c.text for c in fast]


@pytest.mark.slow
def test_embedded_teacher_table_on_real_words(sp_target, tmp_path):
    """The real teacher's vocabulary (SmolLM2): single-token pydoc words cost what the target says, and
    against its own tokenizer every token costs exactly 1 (so the bias is zero at any strength)."""
    from generators.teachers.models import load_tokenizer

    teacher = load_tokenizer("embedded:smollm2")
    target = load_target_tokenizer(sp_target)
    table = ta.cost_table(teacher, target, tmp_path)
    words = sorted({w for ln in _pydoc_lines()[:3000] for w in re.findall(r"[a-z]{3,}", ln)})
    singles = [
        (w, ids[0]) for w in words if len(ids := teacher(" " + w, add_special_tokens=False)["input_ids"]) == 1
    ]
    assert len(singles) > 500
    for word, i in singles:
        assert table["cost"][i] == len(target.encode([" " + word])[0]), word
    own = ta.cost_table(teacher, load_target_tokenizer("embedded:smollm2"), tmp_path)
    assert (own["cost"] == 1).all()


def test_fast_decode_step_with_the_bias_reads_no_values_on_the_host():
    """CUDA-graph safety of the bias, checked on CPU as tests/generators/teachers/test_fast.py does: on
    meta tensors any host read in the step would raise."""
    import torch

    from generators.teachers.fast.engine import FastEngine
    from generators.teachers.fast.sampling import SamplingMode
    from generators.teachers.fast.state import RowState
    from tests.helpers.random_models import random_model

    engine = FastEngine(random_model("tiny-llama", vocab_size=384).to("meta"), max_batch=8)
    engine.graphs.enabled = True
    engine.logit_bias = torch.zeros(384, device="meta")
    with torch.inference_mode():
        engine.dec.allocate(8, 128)
        for mode in (SamplingMode.of(0.0, 0, 1.0, 1.0), SamplingMode.of(0.7, 0, 0.9, 1.2)):
            engine.mode = mode
            engine.state = RowState(8, 32, 384, torch.device("meta"), 128, mode.penalty)
            engine.step(8, 64)
            assert engine.state.out.is_meta


def test_a_target_tokenizer_loads_once_per_process_and_again_when_its_file_changes(sp_target):
    import os

    first = load_target_tokenizer(sp_target)
    assert load_target_tokenizer(sp_target) is first
    stat = os.stat(sp_target)
    os.utime(sp_target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_target_tokenizer(sp_target) is not first
