"""datatrove's own filters as the oracle for litho's rule sets (issue 22): decisions and values.

* :func:`reference` is datatrove's filter of a rule set at its published (default) thresholds.
* :func:`isolated` is the same filter with only one rule on, at a chosen bound: datatrove's own decision
  for that rule alone.
* :func:`confirms` checks one of litho's values against datatrove's code without re-implementing it:
  datatrove's isolated rule must fire at a bound just past the value on one side and not on the other,
  which pins datatrove's value to within ``tol`` of litho's.

Used by tests/filters/rules/test_rule_sets_oracle.py and bench/bench_rules.py.
"""

from __future__ import annotations

import math
import warnings

from filters.rules.rule_sets import Rule

_OFF = {
    "gopher_repetition": dict(
        dup_line_frac=None,
        dup_para_frac=None,
        dup_line_char_frac=None,
        dup_para_char_frac=None,
        top_n_grams=(),
        dup_n_grams=(),
    ),
    "gopher_quality": dict(
        min_doc_words=None,
        max_doc_words=None,
        min_avg_word_length=None,
        max_avg_word_length=None,
        max_symbol_word_ratio=None,
        max_bullet_lines_ratio=None,
        max_ellipsis_lines_ratio=None,
        max_non_alpha_words_ratio=None,
        min_stop_words=None,
    ),
    # FineWeb's rules cannot be set to None: bounds no ratio reaches turn them off
    "fineweb": dict(
        line_punct_thr=-math.inf,
        short_line_thr=math.inf,
        char_duplicates_ratio=math.inf,
        new_line_ratio=math.inf,
    ),
}
# Rules datatrove turns on with one argument: its symbol ratio bounds hashes and ellipses alike.
SHARED = {
    "gopher_too_many_hashes": ("gopher_too_many_hashes", "gopher_too_many_ellipsis"),
    "gopher_too_many_ellipsis": ("gopher_too_many_hashes", "gopher_too_many_ellipsis"),
}
_QUALITY_KEYS = {
    "gopher_short_doc": "min_doc_words",
    "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length",
    "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "max_symbol_word_ratio",
    "gopher_too_many_ellipsis": "max_symbol_word_ratio",
    "gopher_too_many_bullets": "max_bullet_lines_ratio",
    "gopher_too_many_end_ellipsis": "max_ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "max_non_alpha_words_ratio",
    "gopher_enough_stop_words": "min_stop_words",
}
_FINEWEB_KEYS = {
    "line_punct_ratio": "line_punct_thr",
    "short_line_ratio": "short_line_thr",
    "char_dup_ratio": "char_duplicates_ratio",
    "list_ratio": "new_line_ratio",
}


def _filter_class(rule_set: str):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
    }[rule_set]


def reference(rule_set: str):
    """datatrove's filter for ``rule_set`` with its default (published) thresholds."""
    return _filter_class(rule_set)()


def isolated(rule_set: str, reason: str, bound: float):
    """datatrove's filter with only the rule ``reason`` on, at ``bound``."""
    kwargs = dict(_OFF[rule_set])
    if rule_set == "gopher_repetition":
        if reason.startswith("top_"):
            kwargs["top_n_grams"] = ((int(reason.split("_")[1]), bound),)
        elif reason.startswith("duplicated_"):
            kwargs["dup_n_grams"] = ((int(reason.split("_")[1]), bound),)
        else:
            kwargs[reason] = bound
    elif rule_set == "gopher_quality":
        kwargs[_QUALITY_KEYS[reason]] = bound
    elif rule_set == "fineweb":
        kwargs[_FINEWEB_KEYS[reason]] = bound
    else:
        raise ValueError(f"{rule_set}: its rules are one walk over the lines; compare the whole filter")
    return _filter_class(rule_set)(**kwargs)


def decide(step, text: str) -> str:
    """datatrove's decision on ``text``: "" (kept) or the reason it gives. The filter may change the text
    (C4 drops lines); it gets its own document."""
    from datatrove.data import Document

    with warnings.catch_warnings():  # the Gopher quality filter averages an empty list on wordless texts
        warnings.simplefilter("ignore", RuntimeWarning)
        result = step.filter(Document(text=text, id="0"))
    return "" if result is True else (result[1] if isinstance(result, tuple) else "dropped")


def confirms(rule_set: str, rule: Rule, value: float, text: str, tol: float = 1e-9) -> bool | None:
    """Whether datatrove's own rule puts its value within ``tol`` (relative) of litho's ``value``; None when
    it cannot tell (NaN, a rule of C4's walk, or another rule of the same datatrove switch firing first)."""
    if math.isnan(value) or rule_set == "c4":
        return None
    if rule.reason.startswith("top_") and value == 0:
        return (
            None  # fewer than n words: datatrove skips the rule, litho writes 0 (no n-gram covers any text)
        )
    step = tol * max(abs(value), 1.0)
    below, above = value - step, value + step
    fires = (below, above) if rule.side == "max" else (above, below)  # (bound that drops, bound that keeps)
    try:
        dropped = decide(isolated(rule_set, rule.reason, fires[0]), text)
        kept = decide(isolated(rule_set, rule.reason, fires[1]), text)
    except ZeroDivisionError:  # datatrove divides by the word count of a wordless text
        return None
    if dropped not in ("", rule.reason) or kept not in ("", rule.reason):
        return None  # e.g. the hash rule fired before the ellipsis rule it shares a switch with
    return dropped == rule.reason and kept == ""
