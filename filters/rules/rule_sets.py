"""Published quality rule sets, turned on by name (``filters.rule_sets``), with their published thresholds.

Each rule compares one column of :class:`filters.scores.rule_scores.RuleSetScores` with a bound, in the
order datatrove 0.10.1 checks them, and a failed rule drops the row under datatrove's own reason name
(``dup_line_frac``, ``gopher_short_doc``, ``lorem_ipsum``, ``line_punct_ratio``...): the same name is
the rule's key for a threshold override (``filters.rule_thresholds.<set>.<rule>``). Sources:

* ``gopher_repetition``: Rae et al. 2021 ("Scaling Language Models"), App. A, Table A1; datatrove's
  ``GopherRepetitionFilter`` defaults.
* ``gopher_quality``: the same appendix's quality filter; ``GopherQualityFilter`` defaults.
* ``c4``: Raffel et al. 2020 (T5), Sec. 2.2, and TFDS's ``c4_utils``; ``C4QualityFilter`` defaults.
* ``fineweb``: Penedo et al. 2024 ("The FineWeb Datasets"), its three custom filters plus the list
  ratio; ``FineWebQualityFilter`` defaults.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from filters.rules.base import Filter
from generators.errors import ConfigError


class Rule(NamedTuple):
    reason: str  # the drop reason and the override key (datatrove's reason name)
    column: str  # the score column it reads
    side: str  # "min": drop below the bound; "max": drop above it
    bound: float  # the published threshold


RULE_SETS: dict[str, tuple[Rule, ...]] = {
    "gopher_repetition": (
        Rule("dup_para_frac", "rep_dup_para_frac", "max", 0.3),
        Rule("dup_para_char_frac", "rep_dup_para_char_frac", "max", 0.2),
        Rule("dup_line_frac", "rep_dup_line_frac", "max", 0.3),
        Rule("dup_line_char_frac", "rep_dup_line_char_frac", "max", 0.2),
        Rule("top_2_gram", "rep_top_ngram_frac_2", "max", 0.2),
        Rule("top_3_gram", "rep_top_ngram_frac_3", "max", 0.18),
        Rule("top_4_gram", "rep_top_ngram_frac_4", "max", 0.16),
        *(
            Rule(f"duplicated_{n}_n_grams", f"rep_dup_ngram_frac_{n}", "max", bound)
            for n, bound in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
        ),
    ),
    "gopher_quality": (
        Rule("gopher_short_doc", "gopher_n_words", "min", 50),
        Rule("gopher_long_doc", "gopher_n_words", "max", 100_000),
        Rule("gopher_below_avg_threshold", "gopher_mean_word_len", "min", 3),
        Rule("gopher_above_avg_threshold", "gopher_mean_word_len", "max", 10),
        Rule("gopher_too_many_hashes", "gopher_hash_ratio", "max", 0.1),
        Rule("gopher_too_many_ellipsis", "gopher_ellipsis_ratio", "max", 0.1),
        Rule("gopher_too_many_bullets", "gopher_bullet_lines_frac", "max", 0.9),
        Rule("gopher_too_many_end_ellipsis", "gopher_end_ellipsis_lines_frac", "max", 0.3),
        Rule("gopher_below_alpha_threshold", "gopher_alpha_words_frac", "min", 0.8),
        Rule("gopher_enough_stop_words", "gopher_stop_words", "min", 2),
    ),
    "c4": (
        Rule("lorem_ipsum", "c4_lorem_ipsum", "max", 0),
        Rule("curly_bracket", "c4_curly_bracket", "max", 0),
        Rule("too_few_sentences", "c4_sentences", "min", 5),
    ),
    "fineweb": (
        Rule("line_punct_ratio", "fineweb_line_punct_ratio", "min", 0.12),
        Rule("short_line_ratio", "fineweb_short_line_ratio", "max", 0.67),
        Rule("char_dup_ratio", "fineweb_char_dup_ratio", "max", 0.01),
        Rule("list_ratio", "fineweb_list_ratio", "max", 0.3),
    ),
}
# datatrove drops an empty text before the first rule of these sets (the others drop it by a rule).
EMPTY_FIRST = {"gopher_repetition", "fineweb"}


def check_rule_sets(names, thresholds: dict | None = None) -> tuple[list[str], dict[str, dict]]:
    """``filters.rule_sets`` and ``filters.rule_thresholds``, checked: known names, each once; overrides
    only for rule sets that run, of their rules, numbers or null.

    Raises:
        ConfigError: one line naming the key, the bad value and the known names.
    """
    import difflib

    names = [names] if isinstance(names, str) else list(names or [])
    for name in names:
        if name not in RULE_SETS:
            close = difflib.get_close_matches(str(name), RULE_SETS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"filters.rule_sets: unknown rule set {name!r}; use some of {', '.join(RULE_SETS)}{hint}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"filters.rule_sets={names}: name each rule set once")
    checked: dict[str, dict] = {}
    for name, overrides in (thresholds or {}).items():
        key = f"filters.rule_thresholds.{name}"
        if name not in names:
            raise ConfigError(f"{key}: rule set {name!r} is not in filters.rule_sets={names}; add it there")
        known = {r.reason for r in RULE_SETS[name]}
        for rule, value in (overrides or {}).items():
            if rule not in known:
                raise ConfigError(f"{key}.{rule}: no such rule; use one of {', '.join(sorted(known))}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"{key}.{rule}={value}: give a number, or null to turn the rule off")
        checked[name] = dict(overrides or {})
    return names, checked


def rules_of(rule_set: str, thresholds: dict | None = None) -> list[Rule]:
    """The rules of ``rule_set`` in datatrove's order, with ``thresholds`` ({reason: bound or None})
    replacing published bounds; a rule set to None is left out."""
    thresholds = thresholds or {}
    out = []
    for rule in RULE_SETS[rule_set]:
        bound = thresholds.get(rule.reason, rule.bound)
        if bound is not None:
            out.append(rule._replace(bound=float(bound)))
    return out


class PublishedRules(Filter):
    """One published rule set as a rule stage: drops a row at its first failed rule, as datatrove would.

    Rows whose score is NaN (datatrove would divide by zero) pass that rule.

    Args:
        rule_set: A name of :data:`RULE_SETS`.
        thresholds: ``{rule: bound}`` replacing published bounds (None turns a rule off).
        text_column: Column holding the text (for the empty-text check datatrove does first).
    """

    def __init__(self, rule_set: str, thresholds: dict | None = None, text_column: str = "text"):
        check_rule_sets([rule_set], {rule_set: thresholds} if thresholds else None)
        self.name = rule_set
        self.rules = rules_of(rule_set, thresholds)
        self.text_column = text_column

    def needs(self) -> tuple[str, ...]:
        return (self.text_column, *dict.fromkeys(r.column for r in self.rules))

    def reasons(self) -> tuple[str, ...]:
        return (*(("empty",) if self.name in EMPTY_FIRST else ()), *(r.reason for r in self.rules))

    def checks(self, batch: dict):
        if self.name in EMPTY_FIRST:
            strip = self.name == "fineweb"  # FineWeb: no line that is not blank; Gopher: ""
            texts = [str(t) for t in batch[self.text_column]]
            yield np.array([not (t.strip() if strip else t) for t in texts], dtype=bool), "empty"
        for rule in self.rules:
            values = np.asarray(batch[rule.column], dtype=float)
            yield (values < rule.bound if rule.side == "min" else values > rule.bound), rule.reason
