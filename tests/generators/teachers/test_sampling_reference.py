"""litho's sampler held against transformers': the distribution ``generate()`` samples from.

For fixed logits, transformers' ``generate(do_sample=True, output_scores=True)`` returns the scores its
own processors leave (repetition penalty, then temperature, top-k, top-p and min-p, in the order
``generate()`` builds them); their softmax is the reference distribution. litho's processor
(:class:`generators.teachers.hf.RowSampler`, and the fast engine's ``choose``) is then read out
exactly: it draws by inverse CDF from one uniform per row, so a grid of ``N`` evenly spaced uniforms
picks every token ``N * p`` times, up to one. The readout must give the reference's support and its
probabilities within ``2/N``; draws with litho's own counter uniforms must pass a chi-square test
against the reference (the draws are a fixed hash of the seed: the test is never flaky).
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from generators.teachers import sampling
from generators.teachers.contract import SamplingParams
from generators.teachers.fast.sampling import SamplingMode
from generators.teachers.fast.sampling import choose as fast_choose
from generators.teachers.hf import RowSampler
from tests.helpers.random_models import random_model

VOCAB, GRID, DRAWS = 64, 1 << 12, 10000
PAD = 0
OFF = dict(top_k=0, top_p=1.0, min_p=None, repetition_penalty=1.0)  # every warper off, unless a case sets it
# Three left-padded prompts whose tokens repeat, so the penalty changes many logits.
PROMPTS = [[5, 9, 9, 12, 40, 41, 5, 7], [3, 3, 3, 60, 2], [17, 18, 19, 20, 21, 22, 17, 18, 30, 31, 32]]
CASES = {
    "temperature": dict(temperature=0.7),
    "hot": dict(temperature=1.6),
    "top_k": dict(temperature=1.3, top_k=8),
    "top_p": dict(temperature=0.9, top_p=0.8),
    "min_p": dict(temperature=1.5, min_p=0.1),
    "top_k+top_p": dict(temperature=1.0, top_k=20, top_p=0.7),
    "top_p+min_p": dict(temperature=1.2, top_p=0.9, min_p=0.2),
    "penalty": dict(temperature=1.0, repetition_penalty=1.5),
    "all": dict(temperature=0.8, top_k=30, top_p=0.95, min_p=0.05, repetition_penalty=1.3),
    "reward": dict(temperature=1.5, top_p=0.9, repetition_penalty=0.8),  # a penalty < 1 favours repeats
}


class FixedHead(torch.nn.Module):
    """An output head that answers every position of batch row ``b`` with the fixed logits ``table[b]``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.table[:, None, :].expand(-1, hidden.shape[1], -1)


@pytest.fixture(scope="module")
def model():
    """A random 64-token model whose head gives fixed logits (spread enough for every warper to cut)."""
    m = random_model("tiny-llama", vocab_size=VOCAB, seed=3, tie_word_embeddings=False)
    m.lm_head = FixedHead(torch.randn(len(PROMPTS), VOCAB, generator=torch.Generator().manual_seed(7)) * 2.5)
    return m


@pytest.fixture(scope="module")
def batch():
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in PROMPTS])
    return ids, torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])


def _reference(model, batch, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``generate()``'s raw logits [B, V] and its processed distribution [B, V] for one step."""
    ids, mask = batch
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        max_new_tokens=1,
        pad_token_id=PAD,
        **(OFF | case),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    return out.logits[0].float(), out.scores[0].float().softmax(-1)


def _params(case: dict) -> SamplingParams:
    return SamplingParams(**(OFF | {"min_p": 0.0} | case))


def _hf_readout(logits, batch, sp: SamplingParams, row: int, monkeypatch) -> torch.Tensor:
    """litho's hf processor on ``GRID`` copies of one row, its uniforms replaced by the grid."""
    ids, mask = batch
    grid = torch.arange(GRID, dtype=torch.float32) / GRID
    real_uniforms = sampling.uniforms
    monkeypatch.setattr(sampling, "uniforms", lambda words, step: grid)
    warpers = RowSampler.of(sp, ["r"], mask[:1]).w  # the settings as the hf teacher maps them
    processor = RowSampler(warpers, [0] * GRID, mask[row : row + 1].expand(GRID, -1))
    warped = processor(ids[row : row + 1].expand(GRID, -1), logits[row : row + 1].expand(GRID, -1).clone())
    monkeypatch.setattr(sampling, "uniforms", real_uniforms)
    return torch.bincount(warped.argmax(-1), minlength=VOCAB).double() / GRID


def _fast_readout(logits, batch, sp: SamplingParams, row: int, host_checks: bool) -> torch.Tensor:
    """The fast engine's ``choose`` on the same row: its history is the unpadded prompt."""
    ids, mask = batch
    history = ids[row][mask[row].bool()][None].expand(GRID, -1)
    mode = SamplingMode.of(sp.temperature, sp.top_k, sp.top_p, sp.repetition_penalty, sp.min_p)
    scalars = torch.tensor([sp.temperature, sp.top_p, sp.repetition_penalty, sp.min_p])
    grid = torch.arange(GRID, dtype=torch.float32) / GRID
    tokens = fast_choose(logits[row : row + 1].expand(GRID, -1), mode, scalars, history, grid, host_checks)
    return torch.bincount(tokens, minlength=VOCAB).double() / GRID


def _assert_same_distribution(got: torch.Tensor, want: torch.Tensor, label: str) -> None:
    want = want.double()
    assert not got[want == 0].any(), f"{label}: litho keeps tokens the reference removes"
    assert got[want >= 2 / GRID].gt(0).all(), f"{label}: litho removes tokens the reference keeps"
    assert (got - want).abs().max() <= 2 / GRID + 1e-6, f"{label}: {(got - want).abs().max():.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_hf_and_fast_samplers_give_generates_distribution(model, batch, name, monkeypatch):
    logits, want = _reference(model, batch, CASES[name])
    sp = _params(CASES[name])
    truncated = (want == 0).sum(-1)
    if any(k in CASES[name] for k in ("top_k", "top_p", "min_p")):
        assert (truncated > 0).all() and (truncated < VOCAB - 1).all(), "the case must really truncate"
    for row in range(len(PROMPTS)):
        # The hf path with a 16-token top-p prefilter (and its fallback to the full sort), the fast
        # engine's path as inside a CUDA graph (always the full sort).
        monkeypatch.setattr(sampling, "PREFILTER", 16)
        _assert_same_distribution(_hf_readout(logits, batch, sp, row, monkeypatch), want[row], f"hf {row}")
        got = _fast_readout(logits, batch, sp, row, host_checks=False)
        _assert_same_distribution(got, want[row], f"fast {row}")


@pytest.mark.parametrize("name", ["hot", "top_p", "min_p", "all"])
def test_counter_draws_pass_a_chi_square_test_against_generate(model, batch, name):
    """Draws with litho's real per-request uniforms (one request id per draw, as rows of a batch)."""
    logits, want = _reference(model, batch, CASES[name])
    sp = _params(dict(CASES[name], seed=2024))
    ids, mask = batch
    row = 2
    processor = RowSampler.of(sp, [f"req-{i}" for i in range(DRAWS)], mask[row : row + 1].expand(DRAWS, -1))
    warped = processor(ids[row : row + 1].expand(DRAWS, -1), logits[row : row + 1].expand(DRAWS, -1).clone())
    counts = torch.bincount(warped.argmax(-1), minlength=VOCAB).double()
    expected = want[row].double() * DRAWS
    assert counts[expected == 0].sum() == 0
    # Pearson's test needs expected counts >= 5: the rarer kept tokens share one bin.
    big = expected >= 5
    small = (expected > 0) & ~big
    f_obs = torch.cat([counts[big], counts[small].sum()[None]]).numpy()
    f_exp = torch.cat([expected[big], expected[small].sum()[None]]).numpy()
    if f_exp[-1] < 5:
        f_obs, f_exp = f_obs[:-1], f_exp[:-1] * f_obs[:-1].sum() / f_exp[:-1].sum()
    assert len(f_exp) >= 3, "a chi-square test needs several bins"
    assert chisquare(f_obs, f_exp).pvalue > 1e-3


def test_generate_builds_the_processors_in_litho_order(model):
    """The order litho composes (penalty, temperature, top-k, top-p, min-p) is the one ``generate()`` builds."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True, temperature=0.8, top_k=30, top_p=0.95, min_p=0.05, repetition_penalty=1.3
    )
    processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=4)
    names = [type(p).__name__ for p in processors]
    assert names == [
        "RepetitionPenaltyLogitsProcessor",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
    ]
