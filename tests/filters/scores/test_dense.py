"""Key terms, key-term recall and the dense / conversation / layer filters."""

from __future__ import annotations

import numpy as np
import pytest

from filters.rules.dense import DenseFilter
from filters.rules.generated import ConversationFilter, LayerFilter
from filters.scores.dense import DenseScores, copied_frac, key_term_recall, key_terms, stem

SOURCE = (
    "The Krebs cycle runs in the mitochondria. The Krebs cycle oxidises acetyl-CoA and yields 2 ATP per "
    "turn. Each turn of the cycle also reduces NAD to NADH, which the mitochondria use for energy."
)


def test_key_terms_rank_by_frequency_then_position():
    assert key_terms(SOURCE, 5) == ["cycle", "kreb", "mitochondria", "turn", "run"]
    assert "2" in key_terms(SOURCE, 20) and "the" not in key_terms(SOURCE, 20)
    assert stem("functions") == stem("function") and stem("called") == "call"


def test_recall_counts_terms_carried_by_the_rewrite():
    terms = key_terms(SOURCE, 5)
    recall, missing = key_term_recall(terms, "Krebs cycle runs in mitochondria: 2 ATP per turn.")
    assert recall == 1.0 and missing == []
    recall, missing = key_term_recall(terms, "A cycle in cells makes energy.")
    assert recall == pytest.approx(0.2) and missing == ["kreb", "mitochondria", "turn", "run"]
    assert np.isnan(key_term_recall([], "anything")[0])


def test_dense_scores_and_filter_on_the_target_tokenizer():
    rewrite = "Krebs cycle runs in mitochondria: oxidises acetyl-CoA, 2 ATP per turn, NAD to NADH."
    batch = {
        "text": np.array([rewrite, SOURCE + " And more.", "A cycle."], dtype=object),
        "source_text": np.array([SOURCE] * 3, dtype=object),
    }
    out = DenseScores(tokenizer="embedded:smollm2", top_k=5)(batch)
    assert out["source_tokens"][0] > out["source_tokens"][0] - out["tokens_saved"][0] > 0
    assert out["tokens_saved"][0] > 10 and out["tokens_saved"][1] < 0
    out = DenseFilter(min_tokens_saved=1, min_key_term_recall=0.8)(out)
    assert list(out["drop_reason"]) == ["", "dense_not_shorter", "dense_lost_key_terms"]


def test_a_truncated_copy_is_not_a_rewrite():
    prefix = SOURCE[: SOURCE.index(" Each turn")]
    assert copied_frac(SOURCE, prefix) == 1.0
    assert copied_frac(SOURCE, "Krebs cycle runs in mitochondria: 2 ATP per turn.") == 0.0
    batch = {"text": np.array([prefix], dtype=object), "source_text": np.array([SOURCE], dtype=object)}
    out = DenseFilter(min_key_term_recall=0.0)(DenseScores(tokenizer="embedded:smollm2", top_k=5)(batch))
    assert out["tokens_saved"][0] > 0 and list(out["drop_reason"]) == ["dense_copied"]
    assert (
        DenseFilter(max_copied_frac=1.0, min_key_term_recall=0.0)(out | {"drop_reason": None})["drop_reason"][
            0
        ]
        == ""
    )


def test_conversation_and_layer_filters_keep_earlier_reasons():
    batch = {"n_turns": np.array([2, 1, 0]), "drop_reason": np.array(["", "", "too_short"], dtype=object)}
    assert list(ConversationFilter(turns=2)(batch)["drop_reason"]) == [
        "",
        "incomplete_conversation",
        "too_short",
    ]
    batch = {"layers_missing": np.array(["", "steps", "terms,steps"], dtype=object)}
    assert list(LayerFilter(required=["terms"])(batch)["drop_reason"]) == ["", "", "layers_unparsed"]
