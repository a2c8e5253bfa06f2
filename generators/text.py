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


def jsonl_records(path, key: str) -> list[dict]:
    """Every record of a JSONL file (blank lines skipped).

    Raises:
        ConfigError: ``key: PATH line N is ...`` for the first line that is not UTF-8, not JSON or not
            an object, so a corrupt file is named with its line instead of a decoder traceback.
    """
    import json

    from generators.errors import ConfigError

    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{key}: {path} line {number} is not UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
                ) from None
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(
                    f"{key}: {path} line {number} is not JSON ({exc}); fix or remove that line"
                ) from None
            if not isinstance(record, dict):
                raise ConfigError(
                    f"{key}: {path} line {number} is not a JSON object; each line must be one object"
                )
            records.append(record)
    return records


ROFF = re.compile(r"\\f[BIRP]|\\-|\\\(..|\\&")  # font switches, escaped hyphens, special chars


def man_page_text(raw: str, joiner: str = "\n") -> str:
    """The prose of a man page's roff source: request lines (``.TH``, ``'\\"``) dropped, inline escapes
    removed, the remaining lines stripped and joined. For tests and benchmarks on real text."""
    lines = [ROFF.sub("", ln) for ln in raw.splitlines() if not ln.startswith((".", "'"))]
    return joiner.join(ln.strip() for ln in lines if ln.strip())
