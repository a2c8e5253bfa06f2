"""Real English text on this machine that nobody here wrote: Python's ``pydoc_data`` topics, man pages,
and the prose files under /usr/share/doc, cut into passages.

Every document has a stable key (``pydoc:<topic>``, ``man:<file name>``, ``doc:<path>``); a fixed
share of the keys, chosen by hash, is *held out*: the probe's built-in evaluation sets come only from
held-out documents and the built-in pool only from the others, so no arm trains on evaluation text.
(The probe also drops any pool row that shares a long n-gram with an evaluation set:
:func:`pipeline.probe.pool.drop_contaminated`.)

``python -m pipeline.probe.corpus --out pool.jsonl --max-chars 4000000`` writes the pool side as JSONL
(``text``, ``source``, ``key``) for ``litho score``. Man pages are read with a small roff-to-text pass
written here: no Python library converts roff, and the ``man``/``groff`` programs are not everywhere.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import xxhash

SOURCES = ("pydoc", "man", "doc")
VERSION = 1  # bump when what a source yields changes: cached built-in pools are keyed by it
HELD_OUT_PERCENT = 20  # share of document keys held out for evaluation, by hash
MAN_DIR = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man5", "man7", "man8")  # commands, file formats, overviews, admin: prose-rich
# Pages of one family (the name up to its first _ . or -: gcloud, git, systemd) at most: one SDK can
# bring thousands of near-identical pages (16,631 gcloud_* pages on this machine).
MAN_FAMILY_CAP = 20
DOC_DIR = Path("/usr/share/doc")
DOC_SUFFIXES = (".txt", ".md", ".rst", ".markdown")
DOC_SKIP = ("changelog", "copyright", "news", "license", "authors", "thanks", "todo")

# roff escapes with a text meaning; every other escape is dropped.
GLYPHS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "bu": "•", "co": "©", "lq": "“", "rq": "”"}
GLYPHS |= {"oq": "‘", "cq": "’", "ti": "~", "ha": "^", "rs": "\\", "mi": "-", "hy": "-", "pl": "+"}
ROFF_ESCAPE = re.compile(
    r"\\(?:f(?:\[[^]]*\]|\(..|.)|s[-+]?\d+|\*(?:\[[^]]*\]|\(..|.)|n(?:\[[^]]*\]|\(..|.)|\((..)|\[([^]]*)\]|(.))"
)
PARAGRAPH_MACROS = {"PP", "LP", "P", "TP", "IP", "HP", "sp", "SH", "SS", "TQ", "nf", "fi", "RS", "RE"}
FONT_MACROS = {"B", "I", "SM", "SB"}
ALTERNATING_MACROS = {"BR", "BI", "IB", "RB", "RI", "IR"}


def held_out(key: str) -> bool:
    """Whether a document key belongs to the evaluation side (stable across machines and runs)."""
    return xxhash.xxh3_64_intdigest(key.encode()) % 100 < HELD_OUT_PERCENT


def _order(name: str) -> int:
    """Files are read in hash order, so a character cap takes a spread of packages, not the first letters."""
    return xxhash.xxh3_64_intdigest(name.encode())


def _unescape(text: str) -> str:
    def one(match: re.Match) -> str:
        glyph = match.group(1) or match.group(2)
        if glyph is not None:
            return GLYPHS.get(glyph, "")
        char = match.group(3)
        if char is None:
            return ""
        return {"-": "-", "e": "\\", " ": " ", "~": " ", "\\": "\\", "'": "'", "`": "`", ".": "."}.get(
            char, ""
        )

    return ROFF_ESCAPE.sub(one, text)


def _macro_args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def roff_to_text(source: str) -> str:
    """Plain paragraphs of a man page: macros dropped or turned into breaks, font escapes removed."""
    paragraphs: list[list[str]] = [[]]
    in_definition = False
    for line in source.splitlines():
        if in_definition:
            in_definition = line.strip() != ".."
            continue
        if line.startswith(('.\\"', "'\\\"", '.\\"')):
            continue
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name in ("de", "de1", "am", "ig"):
                in_definition = True
            elif name in PARAGRAPH_MACROS:
                paragraphs.append([])
                if name in ("SH", "SS") and rest.strip():
                    paragraphs[-1].append(" ".join(_macro_args(rest)).capitalize())
                    paragraphs.append([])
            elif name in FONT_MACROS:
                paragraphs[-1].append(" ".join(_macro_args(rest)))
            elif name in ALTERNATING_MACROS:
                paragraphs[-1].append("".join(_macro_args(rest)))
            continue
        if line.strip():
            paragraphs[-1].append(line.strip())
        else:
            paragraphs.append([])
    texts = (re.sub(r"\s+", " ", _unescape(" ".join(p))).strip() for p in paragraphs)
    return "\n\n".join(t for t in texts if t)


def passages(text: str, max_chars: int = 2500, min_chars: int = 300) -> list[str]:
    """Cut a document into passages of whole paragraphs, at most ``max_chars`` each (a longer paragraph
    is cut at a space); passages shorter than ``min_chars`` are dropped."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > max_chars:
            cut = paragraph.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(paragraph[:cut])
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    out, current = [], ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n\n{piece}" if current else piece
    if current:
        out.append(current)
    return [p for p in out if len(p) >= min_chars]


def _pydoc() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc:{name}", topics[name]


def _man() -> Iterator[tuple[str, str]]:
    families: dict[str, int] = {}
    for section in MAN_SECTIONS:
        for path in sorted((MAN_DIR / section).glob("*.gz"), key=lambda p: _order(p.name)):
            family = re.split(r"[_.-]", path.name, maxsplit=1)[0]
            if path.is_symlink() or families.get(family, 0) >= MAN_FAMILY_CAP:
                continue
            try:
                raw = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            if raw.lstrip().startswith(".so "):  # an alias of another page
                continue
            families[family] = families.get(family, 0) + 1
            yield f"man:{path.name}", roff_to_text(raw)


def _doc() -> Iterator[tuple[str, str]]:
    for path in sorted(DOC_DIR.rglob("*"), key=lambda p: _order(str(p))):
        name = path.name.lower().removesuffix(".gz")
        prose = name.endswith(DOC_SUFFIXES) or name.startswith("readme")
        if not prose or any(word in name for word in DOC_SKIP) or path.is_symlink() or not path.is_file():
            continue
        try:
            data = path.read_bytes()
            data = gzip.decompress(data) if path.suffix == ".gz" else data
            text = data.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError):
            continue
        yield f"doc:{path.relative_to(DOC_DIR)}", text


READERS = {"pydoc": _pydoc, "man": _man, "doc": _doc}


def documents(source: str, side: str, max_chars: int | None = None) -> Iterator[dict]:
    """Passages of one source's documents on one side (``pool`` or ``eval``), in a fixed order.

    Args:
        source: ``pydoc``, ``man`` or ``doc``.
        side: ``eval`` for held-out documents, ``pool`` for the rest.
        max_chars: Stop after this many characters (None: all).
    """
    total = 0
    for key, text in READERS[source]():
        if held_out(key) != (side == "eval"):
            continue
        for i, passage in enumerate(passages(text)):
            yield {"text": passage, "source": source, "key": f"{key}#{i}"}
            total += len(passage)
            if max_chars is not None and total >= max_chars:
                return


def pool_rows(sources: list[str], max_chars: int) -> list[dict]:
    """The pool side of ``sources``, an equal share of ``max_chars`` each (a source that runs short
    leaves its share to the others), sorted by key hash so the sources interleave."""
    rows: list[dict] = []
    left = list(sources)
    budget = max_chars
    while left:
        share = budget // len(left)
        source = left.pop(0)
        got = list(documents(source, "pool", share))
        rows += got
        budget -= sum(len(r["text"]) for r in got)
    return sorted(rows, key=lambda r: xxhash.xxh3_64_intdigest(r["key"].encode()))


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    parser.add_argument(
        "--max-chars", type=int, default=4_000_000, help="characters in all (about 4 a token)"
    )
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {SOURCES}")
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        parser.error(f"--sources: unknown {unknown}; use {SOURCES}")
    rows = pool_rows(sources, args.max_chars)
    write_jsonl(rows, args.out)
    by_source = {s: sum(r["source"] == s for r in rows) for s in sources}
    print(f"{args.out}: {len(rows)} passages, {sum(len(r['text']) for r in rows)} chars, {by_source}")


if __name__ == "__main__":
    main()
