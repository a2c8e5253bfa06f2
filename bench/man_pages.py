"""Real English text nobody here wrote: this machine's man pages, rendered as a reader sees them.

``man -l PAGE | col -b`` (groff through man-db, backspace overstrikes removed), the first ``chars``
characters, from sections 1 and 8: what the Gopher/datatrove comparison of issue 22 used. Pages are
an even spread over the sorted regular files (links skipped: they repeat another page), so a size
picks the same pages on every run of this machine. Rendered texts are cached under
``~/.cache/litho/man_pages/`` (rendering is ~0.2 s a page).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "litho" / "man_pages"


def page_files(sections: tuple[str, ...] = ("1", "8")) -> list[Path]:
    """Regular (non-link) page files of ``sections``, sorted."""
    files = [
        p for s in sections for p in (MAN_ROOT / f"man{s}").glob("*") if p.is_file() and not p.is_symlink()
    ]
    return sorted(files)


def render(path: Path) -> str:
    """One page as ``man -l`` prints it to a pipe (80 columns), overstrikes removed by ``col -b``."""
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    man = subprocess.run(["man", "-l", str(path)], capture_output=True, env=env, timeout=60)
    col = subprocess.run(["col", "-b"], input=man.stdout, capture_output=True, env=env, timeout=60)
    return col.stdout.decode("utf-8", "replace")


def rendered_man_pages(
    n: int = 800, chars: int = 4000, sections: tuple[str, ...] = ("1", "8"), workers: int = 2
) -> list[str]:
    """The first ``chars`` characters of ``n`` rendered pages (a page that renders empty is replaced by the
    next one in the sort). Cached per (n, chars, sections, page list)."""
    files = page_files(sections)
    if not files:
        raise FileNotFoundError(f"no man pages under {MAN_ROOT}/man{{{','.join(sections)}}}")
    key = hashlib.sha256(json.dumps([n, chars, sections, [str(f) for f in files]]).encode()).hexdigest()[:16]
    cached = CACHE / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    spread = [int(i * len(files) / n) for i in range(min(n, len(files)))]

    def first_rendered(start: int) -> str:
        for path in files[start : start + 10]:  # a page that renders empty: the next one in the sort
            text = render(path)
            if text.strip():
                return text[:chars]
        return ""

    with ThreadPoolExecutor(workers) as pool:
        texts = [t for t in pool.map(first_rendered, spread) if t]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(texts))
    tmp.replace(cached)
    return texts


def real_rows(n: int, chars: int = 1000) -> list[str]:
    """``n`` rows of real text of up to ``chars`` characters (a small teacher's answer is about that long):
    Python's pydoc topics, then the man pages of every section as roff text (requests and escapes removed,
    :func:`generators.text.man_page_text`), each cut at line ends, each piece once. Fewer than ``n``: they
    repeat."""
    from pydoc_data.topics import topics

    from generators.text import man_page_text

    def pieces(text: str):
        piece = ""
        for line in text.splitlines(keepends=True):
            if piece and len(piece) + len(line) > chars:
                yield piece
                piece = ""
            piece += line[:chars]
        if piece.strip():
            yield piece

    def texts():
        yield from (topics[k] for k in sorted(topics))
        for path in page_files(tuple("12345678")):
            if path.suffix == ".gz":
                yield man_page_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))

    rows: dict[str, None] = {}  # pieces in order, each once (pages repeat boilerplate)
    for text in texts():
        rows.update(dict.fromkeys(p for p in pieces(text) if len(p.split()) >= 20))
        if len(rows) >= n:
            return list(rows)[:n]
    rows = list(rows)
    if not rows:
        raise FileNotFoundError("no pydoc topics or man pages on this machine")
    return [rows[i % len(rows)] for i in range(n)]
