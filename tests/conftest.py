"""Shared fixtures: real English text from this machine, and the repo root on sys.path."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from generators.text import man_page_text  # noqa: E402  (after the repo root is on sys.path)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _man_page_text(limit: int = 20) -> list[str]:
    """Plain text of a few man pages (roff requests stripped); nobody here wrote these."""
    texts = []
    for path in sorted(Path("/usr/share/man/man1").glob("*.gz"))[:200]:
        text = man_page_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"), " ")
        if len(text.split()) > 150:
            texts.append(text)
        if len(texts) >= limit:
            break
    return texts


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """Real English paragraphs: Python's pydoc topics, then man pages."""
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics) if len(topics[k].split()) > 150][:20]
    texts += _man_page_text()
    assert len(texts) >= 10, "expected pydoc_data and man pages on this machine"
    return texts


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread, above all on a shared, busy machine; modules of
    tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
