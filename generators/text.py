"""Plain-text helpers shared by the prompt builders (generators/prompts/) and the filters.

They live here, at the bottom of the dependency order (``pipeline → filters → generators``), so that
a generator can trim a step's text or skip stop words without importing anything from ``filters``.
"""

from __future__ import annotations

import re
import unicodedata

# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before whitespace.
SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")
# A sentence boundary: end punctuation followed by whitespace, or a blank line.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
SPACE = re.compile(r"\s+")
STOPWORDS = frozenset(
    """a about above after again against all also although among an and any are as at be because been before
    being below between both but by can could did do does doing down during each either else every few for from
    further had has have having he her here hers him his how however i if in into is it its itself just may
    might more most much must my no nor not now of off on once one only or other our ours out over own same
    shall she should since so some such than that the their theirs them then there these they this those
    through thus to too under until up upon us very was we were what when where whether which while who whom
    whose why will with within without would yet you your yours also each many more used using use""".split()
)


def trim_to_sentence(text: str) -> str:
    """Cut ``text`` after its last complete sentence (empty if it has none)."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else ""


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace collapsed: texts that differ only in case or spacing become equal."""
    return SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def normalized_words(text: str) -> list[str]:
    """NFKC, lower case, split on whitespace: the words that MinHash shingles are made of."""
    return unicodedata.normalize("NFKC", text).lower().split()
