"""LMScorer against a brute-force computation from ``output_attentions=True`` on a small random model.

float32 scoring must equal the brute force (fp32, float64 sums) to 1e-4. A bf16 model reduces its maps
in bf16 (filters/scores/attention.py); its error against the fp32 brute force is bounded per metric by
:data:`BF16_TOL`, which holds both the bf16 forward pass and the bf16 reductions.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import pytest
import torch

from filters.scores.lm_scores import ATTN, BPB, IFD, INFLUENCE, METRICS, LMScorer, plan_windows
from generators.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SINK_K, FRAC, MAX_LEN, STRIDE = 3, 0.3, 24, 9
# bf16 model and bf16 reductions against the fp32 brute force: max abs error per row. Measured on this
# model and these texts: bits/byte 2.2e-3; sink 5e-4, entropy 1.5e-3, long range 4e-4 (all and per-group
# columns); the same within 1e-3 with float32 reductions of the bf16 maps, so nearly all of it is the
# bf16 forward pass. Density counts threshold crossings: a row has 9-60 keys and one flipped key moves
# it by up to 0.11, so it is bounded by the mean over rows (measured 1.5e-2) and the max (0.11).
BF16_TOL = {BPB: 5e-3, "attn_sink_mass": 2e-3, "attn_entropy": 4e-3, "attn_long_range": 2e-3}
BF16_DENSITY_MEAN, BF16_DENSITY_MAX = 0.04, 0.2


def real_lines() -> list[str]:
    from pydoc_data.topics import topics

    return [line.strip() for text in topics.values() for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A random 4-layer Llama with GQA and a byte-level BPE tokenizer trained on pydoc text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    where = tmp_path_factory.mktemp("tiny_llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(real_lines()[:3000], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(where)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger q/k weights give peaked, varied attention instead of near-uniform maps
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    model.save_pretrained(where)
    return str(where)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = real_lines()
    rng = random.Random(3)
    picked = [" ".join(rng.sample(lines, rng.randint(1, 4))) for _ in range(7)]
    longest = max(lines[:300], key=len)
    short = [longest[:size] for size in (9, 15, 21, 27, 33, 39)]  # one window each, of uneven lengths
    return ["Short one.", "A", *short, *picked]  # "A" is shorter than the sink


@functools.cache
def eager_model(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    return AutoTokenizer.from_pretrained(model_dir), model


def head_metrics(a: np.ndarray, first: int) -> tuple[list, list, list, dict]:
    """Literal per-query and per-key metrics of one head's ``(n, n)`` attention map."""
    n, k = len(a), SINK_K
    d = n - 3 * (n // 4)
    sink, ent, far, rel_mean = [], [], [], {}
    for i in range(max(first, k), n):
        rest = a[i, k : i + 1]
        sink.append(a[i, :k].sum())
        far.append(sum(a[i, j] for j in range(k, i - d + 1)) / rest.sum())
        if i - k + 1 >= 2:
            p = rest / rest.sum()
            ent.append(-(p * np.log(p)).sum() / math.log(i - k + 1))
    for j in range(max(first, k), n - 1):
        rel = [a[i, j] * (i - k + 1) / a[i, k : i + 1].sum() for i in range(j + 1, n)]
        rel_mean[j] = np.mean(rel)
    return sink, ent, far, rel_mean


def brute_force(model_dir: str, text: str, layer_groups: int) -> dict[str, float]:
    """Every metric from the full attention maps of an eager model, one window at a time."""
    tok, model = eager_model(model_dir)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    groups = [list(range(layers))] + [g.tolist() for g in np.array_split(np.arange(layers), layer_groups)]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nll = 0.0
    per_layer = [([], [], []) for _ in range(layers)]
    bearing, eligible = [0] * len(groups), 0
    for start, end, owned in plan_windows(len(ids), MAX_LEN - 1, STRIDE):
        x = [tok.bos_token_id, *ids[start:end]]
        n, first = len(x), 1 + owned - start
        with torch.no_grad():
            out = model(torch.tensor([x]), output_attentions=True)
        logp = torch.log_softmax(out.logits[0].double(), -1)
        nll -= sum(float(logp[p - 1, x[p]]) for p in range(first, n))
        att = torch.stack(out.attentions)[:, 0].double().numpy()  # (layers, heads, n, n)
        counts = np.zeros((layers, n), dtype=int)  # heads in which key j gets more than its uniform share
        for layer in range(layers):
            for h in range(heads):
                sink, ent, far, rel_mean = head_metrics(att[layer, h], first)
                for acc, vals in zip(per_layer[layer], (sink, ent, far), strict=True):
                    acc.extend(vals)
                for j, r in rel_mean.items():
                    counts[layer, j] += r > 1.0
        keys = list(range(max(first, SINK_K), n - 1))
        eligible += len(keys)
        for g, members in enumerate(groups):
            need = max(1, math.ceil(FRAC * len(members) * heads - 1e-9))
            bearing[g] += sum(counts[members, j].sum() >= need for j in keys)
    result = {BPB: nll / (math.log(2) * len(text.encode("utf-8")))}
    for g, members in enumerate(groups):
        suffix = "" if g == 0 else f"_g{g - 1}"
        for m, name in enumerate(ATTN[:3]):
            vals = [v for layer in members for v in per_layer[layer][m]]
            result[name + suffix] = float(np.mean(vals)) if vals else float("nan")
        result[ATTN[3] + suffix] = bearing[g] / eligible if eligible else float("nan")
    return result


@pytest.fixture(scope="module")
def reference(tiny_model, texts) -> list[dict[str, float]]:
    """The brute-force scores of every text (two layer groups)."""
    return [brute_force(tiny_model, text, layer_groups=2) for text in texts]


def make_scorer(model_dir: str, batch_size: int, **extra) -> LMScorer:
    settings = dict(dtype="float32", layer_groups=2) | extra
    return LMScorer(
        model=model_dir,
        device="cpu",
        max_len=MAX_LEN,
        stride=STRIDE,
        batch_size=batch_size,
        sink_k=SINK_K,
        density_head_frac=FRAC,
        **settings,
    )


def test_windows_score_every_token_once():
    for n in range(0, 60):
        for width, stride in [(8, 1), (8, 4), (8, 7), (8, 8), (23, 9)]:
            spans = plan_windows(n, width, stride)
            scored = [t for start, end, owned in spans for t in range(owned, end)]
            assert scored == list(range(n))
            assert all(end - start == min(width, n) and start <= owned for start, end, owned in spans)


def test_matches_brute_force_with_windows_and_padding(tiny_model, texts, reference):
    scorer = make_scorer(tiny_model, batch_size=3)
    lengths = [len(x) for x in scorer.tok(texts, add_special_tokens=False)["input_ids"]]
    assert max(lengths) > 3 * MAX_LEN and min(lengths) < SINK_K  # several windows, and a row with no queries
    assert {(n + 1) % 4 for n in lengths if n + 1 < MAX_LEN} == {0, 1, 2, 3}  # every rounding of n // 4
    got = scorer({"text": np.array(texts, dtype=object)})
    for row, want in enumerate(reference):
        assert set(want) == set(scorer.adds)
        for name, value in want.items():
            np.testing.assert_allclose(got[name][row], value, atol=1e-4, rtol=0, err_msg=f"{name} row {row}")
    assert 0 < np.nanmean(got["attn_density_v1"]) < 1  # the metric is not degenerate on this model


def test_bf16_stays_within_the_stated_error_of_fp32(tiny_model, texts, reference):
    scorer = make_scorer(tiny_model, batch_size=3, dtype="bfloat16")
    assert scorer.model.dtype == torch.bfloat16 and scorer.reduce_dtype == torch.bfloat16
    got = scorer.score(texts)
    assert set(got) == set(reference[0])
    for name in got:
        want = np.array([r[name] for r in reference])
        assert (np.isnan(got[name]) == np.isnan(want)).all(), name
        error = np.abs(got[name] - want)[~np.isnan(want)]
        base = name.split("_v1")[0] if name != BPB else BPB
        if base == "attn_density":
            assert error.mean() <= BF16_DENSITY_MEAN and error.max() <= BF16_DENSITY_MAX, (name, error)
        else:
            assert error.max() <= BF16_TOL[base], (name, error.max())


def test_per_layer_columns(tiny_model, texts):
    """``layer_groups`` equal to the number of layers gives one column per layer."""
    few = texts[2:8]  # one window each, of uneven lengths
    got = make_scorer(tiny_model, batch_size=4, layer_groups=4).score(few)
    assert {f"{m}_g3" for m in ATTN} <= set(got) and not any(name.endswith("_g4") for name in got)
    for row, text in enumerate(few):
        for name, value in brute_force(tiny_model, text, layer_groups=4).items():
            np.testing.assert_allclose(got[name][row], value, atol=1e-4, rtol=0, err_msg=f"{name} row {row}")


def test_only_the_wanted_metrics_are_computed(tiny_model, texts, reference):
    full = {name: np.array([r[name] for r in reference]) for name in reference[0]}
    some = make_scorer(tiny_model, batch_size=4, metrics=["density", "entropy"])
    assert some.adds == (BPB, "attn_entropy_v1", "attn_density_v1") + tuple(
        f"{m}_g{g}" for g in range(2) for m in ("attn_entropy_v1", "attn_density_v1")
    )
    got = some.score(texts)
    assert set(got) == set(some.adds)
    for name in got:
        np.testing.assert_allclose(got[name], full[name], atol=1e-4, rtol=0, err_msg=name)
    bpb_only = make_scorer(tiny_model, batch_size=4, metrics=[])
    assert bpb_only.adds == (BPB,) and bpb_only.model.config._attn_implementation == "sdpa"
    got = bpb_only.score(texts)
    assert list(got) == [BPB]
    np.testing.assert_allclose(got[BPB], full[BPB], atol=1e-4, rtol=0)  # sdpa instead of eager attention


def test_metric_names_are_checked():
    assert LMScorer.columns(metrics=list(METRICS), layer_groups=0)[1] == (BPB, *ATTN, INFLUENCE)
    assert LMScorer.columns(metrics=list(METRICS), layer_groups=0, prompt_column="prompt") == (
        ("text", "prompt"),
        (BPB, *ATTN, INFLUENCE, IFD),
    )
    with pytest.raises(
        ConfigError, match="filters.lm.metrics: unknown metric 'attn_entropy_v1'; use a list of"
    ):
        LMScorer.columns(metrics=["sink_mass", "attn_entropy_v1"])


def test_padding_does_not_change_scores(tiny_model, texts):
    together = make_scorer(tiny_model, batch_size=16).score(texts)
    alone = make_scorer(tiny_model, batch_size=1)
    for row, text in enumerate(texts):
        single = alone.score([text])
        for name in together:
            np.testing.assert_allclose(together[name][row], single[name][0], atol=1e-5, rtol=0, err_msg=name)


def test_dropped_and_empty_rows_get_nan(tiny_model):
    scorer = make_scorer(tiny_model, batch_size=4)
    batch = {"text": ["kept text here", "dropped text", ""], "drop_reason": ["", "too_short", ""]}
    out = scorer(batch)
    assert np.isfinite(out[BPB][0]) and np.isnan(out[BPB][1]) and np.isnan(out[BPB][2])
    assert np.isnan(out["attn_entropy_v1"][1:]).all() and len(out["text"]) == 3


@pytest.mark.slow
def test_real_scorer_ranks_constructed_cases():
    rng = random.Random(0)
    prose = (
        "The river rose slowly through the night, and by morning the lower fields were under water. "
        "Farmers moved their animals to the hill, where the old church stood above the flood."
    )
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzQXZ0123456789#%&") for _ in range(len(prose)))
    scorer = LMScorer(max_len=128, batch_size=4, layer_groups=0)
    out = scorer.score([prose, noise, " ".join([prose] * 5)])
    bpb = out[BPB]
    assert bpb[1] > 2 * bpb[0]  # noise costs far more bits per byte than prose
    assert bpb[2] < bpb[0]  # a repeated paragraph is predictable after its first copy
    assert all(np.isfinite(out[name]).all() for name in ATTN)


@pytest.mark.slow
def test_compiled_reductions_match(tiny_model, texts):
    """Over 30 s: torch.compile (Inductor, dynamic shapes) builds the fused reductions' C++ kernels on the CPU;
    that the compiled path gives the plain path's numbers is what it tests."""
    # Small batches (still of windows of uneven lengths): the reductions loop over a batch's windows, so
    # Dynamo unrolls them into a graph per batch length; batches of 16 and a shorter last one compiled
    # two large graphs (55-107 s on a fresh Inductor cache), batches of 4 one small graph (29 s).
    plain = make_scorer(tiny_model, batch_size=4).score(texts)
    out = make_scorer(tiny_model, batch_size=4, compile_metrics=True).score(texts)
    for name in plain:
        np.testing.assert_allclose(out[name], plain[name], atol=1e-5, rtol=0, err_msg=name)
