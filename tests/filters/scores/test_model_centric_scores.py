"""IFD, AttentionInfluence and the reference-model gap on tiny random models, each against a computation
written the plain way: transformers' own loss with ``labels`` (-100 on the request, as TRL and the
Superfiltering code mask prompts), explicit uniform attention maps, and two scorers run apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from filters.scores import retrieval_heads as rh
from filters.scores.attention import metrics_attention, register
from filters.scores.lm_parts import prompt_messages
from filters.scores.lm_scores import BPB, IFD, INFLUENCE, REF_GAP, LMScorer
from tests.helpers.random_models import write_random_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "The river rose slowly through the night, and by morning the fields were under water.",
    "A teacher writes, a scorer judges, a filter keeps.",
    "Cats, rivers, numbers and rain: short stories about small things. " * 6,  # several windows
]
REQUESTS = [
    json.dumps([{"role": "user", "content": "Write about a flood in the night."}]),
    "Describe a pipeline.",  # a plain string is one user turn
    None,  # no request: no IFD
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("models")
    return str(write_random_model(root / "a", seed=0)), str(write_random_model(root / "b", seed=1))


def scorer(path: str, tmp_path, **kw) -> LMScorer:
    settings = dict(device="cpu", dtype="float32", max_len=64, batch_size=2, layer_groups=0, metrics=[])
    return LMScorer(model=path, cache_dir=str(tmp_path), **(settings | kw))


def hf_loss(model, ids: list[int], scored_from: int) -> float:
    """Summed NLL of ``ids[scored_from:]`` by transformers' loss (labels -100 before them)."""
    labels = [-100] * scored_from + ids[scored_from:]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    return float(out.loss) * (len(ids) - scored_from)


def test_ifd_is_the_ratio_of_transformers_losses_after_and_without_the_request(models, tmp_path):
    s = scorer(models[0], tmp_path, metrics=["ifd"], prompt_column="prompt")
    assert s.adds == (BPB, IFD)
    got = s({"text": np.array(TEXTS[:2], dtype=object), "prompt": np.array(REQUESTS[:2], dtype=object)})
    for row in range(2):
        text = s.tok(TEXTS[row], add_special_tokens=False)["input_ids"]
        request = s.tok.apply_chat_template(prompt_messages(REQUESTS[row]), add_generation_prompt=True)
        request = list(request["input_ids"] if hasattr(request, "keys") else request)
        alone = hf_loss(s.model, [s.prefix, *text], 1)
        after = hf_loss(s.model, [*request, *text], len(request))
        np.testing.assert_allclose(got[BPB][row], alone / math.log(2) / len(TEXTS[row].encode()), rtol=1e-5)
        np.testing.assert_allclose(got[IFD][row], after / alone, rtol=1e-5)
    many = s.score(TEXTS, REQUESTS)
    assert np.isnan(many[IFD][2]) and np.isfinite(many[IFD][:2]).all()  # no request: NaN
    np.testing.assert_allclose(many[IFD][:2], got[IFD], rtol=1e-5)  # a long row in the batch changes nothing
    assert LMScorer.columns(metrics=["ifd"])[1] == (BPB,)  # no prompt column: no IFD


def test_prompt_forms():
    assert prompt_messages('[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]')[1] == {
        "role": "user",
        "content": "u",
    }
    assert prompt_messages("plain request") == [{"role": "user", "content": "plain request"}]
    assert (
        prompt_messages("  ") is None
        and prompt_messages(None) is None
        and prompt_messages(float("nan")) is None
    )
    assert prompt_messages([{"role": "user", "content": "x"}]) == [{"role": "user", "content": "x"}]


def test_uniform_heads_equal_explicit_uniform_attention_maps():
    torch.manual_seed(0)
    batch, heads, kv, length, dim = 2, 4, 2, 7, 8
    q, k, v = (
        torch.randn(batch, heads, length, dim),
        torch.randn(batch, kv, length, dim),
        torch.randn(batch, kv, length, dim),
    )
    module = type(
        "Attn", (), {"layer_idx": 3, "num_key_value_groups": 2, "is_causal": True, "training": False}
    )()
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None].expand(batch, 1, length, length)
    masked = torch.tensor([1, 2])
    for eager in (True, False):
        out, _ = metrics_attention(
            module, q, k, v, causal, dim**-0.5, litho_uniform={3: masked}, litho_eager=eager
        )
        scores = (q @ k.repeat_interleave(2, 1).transpose(2, 3)) * dim**-0.5 + causal
        probs = scores.softmax(-1)
        uniform = torch.ones(length, length).tril()
        probs[:, masked] = (uniform / uniform.sum(1, keepdim=True))[None, None]
        want = (probs @ v.repeat_interleave(2, 1)).transpose(1, 2)
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_influence_shares_the_layers_below_the_first_masked_head(models, tmp_path):
    for metrics in (["influence"], ["influence", "entropy"]):  # SDPA or eager layers, as the base pass
        s = scorer(models[0], tmp_path, metrics=metrics)
        register()
        heads = rh.retrieval_heads(
            s.model, lambda t, s=s: s.tok(t, add_special_tokens=False)["input_ids"], s.prefix, tmp_path
        )
        assert len(heads["heads"]) == max(1, round(0.05 * 2 * 4)) and s.first_masked == heads["heads"][0][0]
        assert np.isfinite(s.score(TEXTS)[INFLUENCE]).all()
        s.uniform, s.first_masked = {1: torch.tensor([0, 3])}, 1  # heads of the top layer only
        shared = s.score(TEXTS)[INFLUENCE]
        assert (shared != 0).all()
        # The masked pass run from the embeddings gives the same loss as the one started from the base
        # pass's output of the layers below the first masked head.
        s.first_masked = 0
        np.testing.assert_allclose(s.score(TEXTS)[INFLUENCE], shared, atol=1e-6)
        # With no head masked, the masked pass repeats the base pass: the score is 0, exactly when the
        # base pass ran SDPA too, to float32 rounding when it ran the eager attention of the metrics.
        s.uniform, s.first_masked = {}, 1
        unmasked = s.score(TEXTS)[INFLUENCE]
        assert (unmasked == 0).all() if metrics == ["influence"] else (np.abs(unmasked) < 1e-5).all()


def test_retrieval_heads_are_cached_with_the_model(models, tmp_path, monkeypatch):
    s = scorer(models[0], tmp_path, metrics=["influence"])
    cached = list((tmp_path / "retrieval_heads").glob("*.json"))
    assert len(cached) == 1
    found = json.loads(cached[0].read_text())
    assert np.asarray(found["scores"]).shape == (2, 4) and 0 <= found["copy_accuracy"] <= 1
    monkeypatch.setattr(rh, "detect", lambda *a, **k: pytest.fail("the cached heads were found again"))
    again = scorer(models[0], tmp_path, metrics=["influence"])
    assert {k: v.tolist() for k, v in again.uniform.items()} == {k: v.tolist() for k, v in s.uniform.items()}
    other = scorer(
        models[1], tmp_path / "other", metrics=["entropy"]
    )  # another model: no heads asked, none found
    assert other.uniform == {} and not (tmp_path / "other" / "retrieval_heads").exists()


def test_the_retrieval_task_copies_the_needle_exactly(models, tmp_path):
    s = scorer(models[0], tmp_path)
    encode = lambda t: s.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    for ids, queries, (start, end) in rh.samples(encode, s.prefix):
        answer = [ids[q + 1] for q in queries]
        assert answer == ids[start:end] and queries[-1] == len(ids) - 2 and ids[0] == s.prefix


def test_reference_gap_is_the_difference_of_two_scorers(models, tmp_path):
    both = scorer(models[0], tmp_path, reference=models[1])
    assert both.adds == (BPB, REF_GAP)
    got = both.score(TEXTS)
    alone = [scorer(m, tmp_path).score(TEXTS)[BPB] for m in models]
    np.testing.assert_allclose(got[BPB], alone[0], rtol=1e-6)
    np.testing.assert_allclose(got[REF_GAP], alone[0] - alone[1], rtol=1e-6, atol=1e-9)
    assert (np.abs(got[REF_GAP]) > 1e-3).all()  # two different models


def test_cost_bench_runs_at_its_smallest_size(models, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {"LITHO_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "bench/bench_score_costs.py", "--quick", "--model", models[0], "--threads", "1"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 6 and rows[0].endswith("| 1.00x |"), done.stdout
