import numpy as np
import pytest

from filters.dedup.exact import ExactHash, duplicates_to_drop
from filters.rules.rule_sets import PublishedRules
from filters.rules.sanity import SanityFilter
from filters.rules.thresholds import ThresholdFilter
from filters.scores.clean import Cleaner
from filters.scores.rule_scores import RuleSetScores
from generators.text import normalize, trim_to_sentence


def test_trim_to_sentence():
    assert trim_to_sentence("One. Two is here! Three is cut mid") == "One. Two is here!"
    assert trim_to_sentence("no sentence end at all") == ""
    assert trim_to_sentence('He said "stop." Then') == 'He said "stop."'


def test_cleaner_trims_only_truncated_rows():
    batch = {
        "text": np.array([" Full. Cut here", "Done. Not cut"], dtype=object),
        "finish_reason": np.array(["length", "stop"], dtype=object),
    }
    out = Cleaner(truncated="trim")(batch)
    assert list(out["text"]) == ["Full.", "Done. Not cut"]
    assert list(out["trimmed"]) == [True, False]
    with pytest.raises(ValueError, match="filters.truncated"):
        Cleaner(truncated="cut")


def test_repetition_scores_count_repeats_not_first_occurrences(real_texts):
    """Gopher's semantics (datatrove's): only the repeated occurrences count, over the text's length."""
    text = real_texts[0]
    looped = " ".join([text.split(".")[0]] * 8)
    twice = "one two three four five one two three four five"  # 47 characters
    scores = RuleSetScores(rule_sets=("gopher_repetition",))({"text": [text, looped, twice, "a\nb\na\na"]})
    assert scores["rep_dup_ngram_frac_5"][1] > 0.6 > 0.15 > scores["rep_dup_ngram_frac_5"][0]
    assert scores["rep_dup_ngram_frac_5"][2] == len("onetwothreefourfive") / 47  # the second copy only
    assert scores["rep_top_ngram_frac_2"][2] == 2 * len("one two") / 47  # the top 2-gram, all its copies
    assert scores["rep_dup_line_frac"][3] == 0.5 and scores["rep_dup_line_char_frac"][3] == 2 / 7


def _scored(texts, finish=None):
    return {
        "text": np.array(texts, dtype=object),
        "finish_reason": np.array(finish or ["stop"] * len(texts), dtype=object),
    }


def test_sanity_filter_records_first_reason(real_texts):
    good = real_texts[0]
    looped = " ".join(["the same words again and again"] * 30)
    batch = _scored(["", "too short text", looped, good, good], ["stop", "stop", "stop", "stop", "error"])
    out = SanityFilter(min_words=40)(batch)
    assert list(out["drop_reason"]) == ["empty", "too_short", "", "", "teacher_error"]
    out = PublishedRules("gopher_repetition")(RuleSetScores()(out))  # a later rule set names the loop
    assert list(out["drop_reason"]) == ["empty", "too_short", "top_2_gram", "", "teacher_error"]


def test_sanity_filter_keeps_earlier_reasons():
    batch = _scored(["short"])
    batch["drop_reason"] = np.array(["upstream"], dtype=object)
    assert list(SanityFilter()(batch)["drop_reason"]) == ["upstream"]


def test_truncated_dropped_unless_trimmed(real_texts):
    batch = _scored([real_texts[1], real_texts[2]], ["length", "length"])
    batch["trimmed"] = np.array([True, False])
    assert list(SanityFilter(drop_truncated=True)(batch)["drop_reason"]) == ["", "truncated"]


def test_threshold_filter_bounds_and_nan():
    batch = {"chars_per_token": np.array([1.0, 4.0, 9.0, np.nan])}
    out = ThresholdFilter({"chars_per_token": {"min": 2.0, "max": 8.0}})(batch)
    assert list(out["drop_reason"]) == ["chars_per_token_below_min", "", "chars_per_token_above_max", ""]
    with pytest.raises(KeyError, match="filters.thresholds.bits"):
        ThresholdFilter({"bits": {"min": 1}})(batch)
    with pytest.raises(ValueError, match="unknown keys"):
        ThresholdFilter({"x": {"minimum": 1}})


def test_exact_dedup_normalises_and_keeps_smallest_id():
    assert normalize("  Hello\n\tWORLD ") == "hello world"
    hashes = ExactHash()({"text": ["Hello world", "hello   WORLD", "other"]})["text_hash"]
    assert hashes[0] == hashes[1] != hashes[2]
    assert duplicates_to_drop(["b", "a", "c"], [1, 1, 2]) == {"b": "a"}
