"""The scores behind the published quality rules beside Gopher repetition: Gopher quality (Rae et al.
2021, App. A), C4 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", Sec. 2.2) and FineWeb's own rules (Penedo et al. 2024, "The FineWeb
Datasets"), each as datatrove 0.10.1 computes it in ``GopherQualityFilter``, ``C4QualityFilter`` and
``FineWebQualityFilter`` (datatrove's constants, word and sentence splitters are imported, not copied;
see filters/scores/repetition.py for why litho calls datatrove).

datatrove's filters return at the first failed rule; these functions return every quantity as a
number, so a rule set's decision is a comparison of columns with the published thresholds
(filters/rules/rule_sets.py). Where datatrove divides by zero (a text without words) the value is NaN.
"""

from __future__ import annotations

GOPHER_COLUMNS = (
    "gopher_n_words",
    "gopher_mean_word_len",
    "gopher_hash_ratio",
    "gopher_ellipsis_ratio",
    "gopher_bullet_lines_frac",
    "gopher_end_ellipsis_lines_frac",
    "gopher_alpha_words_frac",
    "gopher_stop_words",
)
C4_COLUMNS = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_sentences", "c4_removed_lines_frac")
FINEWEB_COLUMNS = (
    "fineweb_line_punct_ratio",
    "fineweb_short_line_ratio",
    "fineweb_char_dup_ratio",
    "fineweb_list_ratio",
)
NAN = float("nan")


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else NAN


def gopher_quality(text: str, words: list[str]) -> dict[str, float]:
    """``GopherQualityFilter``'s quantities. ``gopher_n_words`` and the mean word length count only words
    with a character outside datatrove's punctuation set; the symbol and alphabetic ratios are over all
    words; ``gopher_stop_words`` is the number of distinct stop words present (case-sensitive, as datatrove).
    """
    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
    from datatrove.utils.text import PUNCTUATION_SET

    non_symbol = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines()
    return {
        "gopher_n_words": float(len(non_symbol)),
        "gopher_mean_word_len": _ratio(sum(len(w) for w in non_symbol), len(non_symbol)),
        "gopher_hash_ratio": _ratio(text.count("#"), len(words)),
        "gopher_ellipsis_ratio": _ratio(text.count("...") + text.count("…"), len(words)),
        "gopher_bullet_lines_frac": _ratio(
            sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines), len(lines)
        ),
        "gopher_end_ellipsis_lines_frac": _ratio(
            sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines), len(lines)
        ),
        "gopher_alpha_words_frac": _ratio(sum(any(c.isalpha() for c in w) for w in words), len(words)),
        "gopher_stop_words": float(len(set(STOP_WORDS).intersection(words))),
    }


def c4_walk(text: str) -> tuple[list[str], dict[str, float]]:
    """``C4QualityFilter``'s walk over the lines (its defaults: lines split on newlines, citations removed,
    lines without terminal punctuation, with fewer than 3 words, a word over 1,000 characters, "javascript"
    or a policy phrase removed). The walk stops at the first remaining line with "lorem ipsum" or a curly
    bracket, which drops the page: ``c4_lorem_ipsum`` / ``c4_curly_bracket`` say whether it stopped there
    (1.0) or not (0.0). ``c4_removed_lines_frac`` is the share of the page's lines C4 would remove (lines
    after a stop are not looked at), for information: litho never rewrites a text (docs/metrics.md).

    Returns:
        The lines kept before the walk ended (their sentences are ``c4_sentences``: :func:`c4`), and the
        other columns.
    """
    from datatrove.pipeline.filters.c4_filters import (
        CITATION_REGEX,
        ELLIPSIS,
        END_PUNCTUATION,
        POLICY_SUBSTRINGS,
    )

    lines = text.splitlines()
    out = {"c4_lorem_ipsum": 0.0, "c4_curly_bracket": 0.0}
    kept: list[str] = []
    removed = 0
    for line in lines:
        line = line.strip()
        words = line.split()
        removed += 1  # until the line survives every check
        if any(len(word) > 1000 for word in words):
            continue
        line = CITATION_REGEX.sub("", line)
        if not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS) or len(words) < 3:
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            out["c4_lorem_ipsum"] = 1.0
            break
        if "javascript" in lower:  # before the bracket check, as datatrove: such a line goes, not the page
            continue
        if "{" in line:
            out["c4_curly_bracket"] = 1.0
            break
        if any(p in lower for p in POLICY_SUBSTRINGS):
            continue
        removed -= 1
        kept.append(line)
    out["c4_removed_lines_frac"] = _ratio(removed, len(lines))
    return kept, out


def c4(text: str, sentences: list[int] | None = None) -> dict[str, float]:
    """The C4 columns of one text: :func:`c4_walk`'s and ``c4_sentences``, the sentences of the kept lines
    (datatrove's sentence split).

    Args:
        text: The document.
        sentences: The sentence count of each kept line, when the caller counted them for a whole batch
            (filters/scores/words.py); None counts them here.
    """
    from filters.scores.words import count_sentences

    kept, out = c4_walk(text)
    out["c4_sentences"] = float(sum(count_sentences(kept) if sentences is None else sentences))
    return out


def fineweb(text: str, words: list[str]) -> dict[str, float]:
    """``FineWebQualityFilter``'s ratios over the non-blank lines (``text.split("\\n")``): lines ending in
    terminal punctuation, lines of at most 30 characters, characters of duplicate lines over the
    characters of the text without newlines, and newlines per word (the "list" ratio)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
    from datatrove.utils.text import TERMINAL_PUNCTUATION

    stops = tuple(TERMINAL_PUNCTUATION)
    lines = [line for line in text.split("\n") if line.strip() != ""]
    newlines = text.count("\n")
    return {
        "fineweb_line_punct_ratio": _ratio(sum(1 for line in lines if line.endswith(stops)), len(lines)),
        "fineweb_short_line_ratio": _ratio(sum(1 for line in lines if len(line) <= 30), len(lines)),
        "fineweb_char_dup_ratio": _ratio(find_duplicates(lines)[1], len(text.replace("\n", ""))),
        "fineweb_list_ratio": _ratio(newlines, len(words)) if newlines else 0.0,
    }
