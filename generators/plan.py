"""Deterministic request plans: which prompts to send, each with a stable id.

A plan is a list of plain dict rows (one per request) with at least ``id``, ``generator`` and
``prompt`` (the chat messages as JSON). Generators add the columns that describe what was asked
(topic, format, audience, source ids...), which travel with the row into the output shards.
The same config and seed always give the same rows in the same order with the same ids.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import xxhash

from generators.errors import ConfigError


@dataclass(frozen=True)
class Topic:
    domain: str
    subdomain: str
    topic: str


def request_id(content: dict, seed: int) -> str:
    """Stable 16-hex-digit id: xxh3-64 of the canonical JSON of what is asked, keyed by the seed."""
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return xxhash.xxh3_64_hexdigest(canonical.encode(), seed=seed)


def messages_json(messages: list[dict]) -> str:
    return json.dumps(messages, ensure_ascii=False)


def load_topics(path: str | None = None, domains: list[str] | None = None) -> list[Topic]:
    """Read a ``domain<TAB>subdomain<TAB>topic`` file (default: the built-in list).

    Raises:
        ValueError: the file is missing, malformed, or the domain filter leaves nothing.
    """
    if path:
        source = Path(path).expanduser()
        if not source.is_file():
            raise ConfigError(
                f"generator.topics_file={path}: no such file; give a TSV with domain, subdomain, topic"
            )
        text = source.read_text(encoding="utf-8")
    else:
        text = resources.files("generators").joinpath("data/topics.tsv").read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows or [c.strip().lower() for c in rows[0]] != ["domain", "subdomain", "topic"]:
        raise ConfigError(
            f"generator.topics_file={path}: first line must be 'domain<TAB>subdomain<TAB>topic'"
        )
    topics = [Topic(*(c.strip() for c in r)) for r in rows[1:] if len(r) == 3 and r[2].strip()]
    if domains:
        wanted = {d.lower() for d in domains}
        topics = [t for t in topics if t.domain.lower() in wanted]
    if not topics:
        raise ConfigError(
            f"generator.domains={domains}: no topic left; check the names against the topics file"
        )
    return topics


def sample_combinations(sizes: tuple[int, ...], n: int, seed: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """Yield ``n`` (variant, index tuple) picks over the grid ``sizes`` without repeats per variant.

    Each pass over the grid is a fresh seeded permutation, so every combination is used once
    before any is used twice; ``variant`` counts the passes and makes repeated prompts distinct.
    """
    total = int(np.prod(sizes))
    rng = np.random.default_rng(seed)
    produced = 0
    variant = 0
    while produced < n:
        for flat in rng.permutation(total)[: n - produced]:
            yield variant, tuple(int(i) for i in np.unravel_index(int(flat), sizes))
            produced += 1
        variant += 1
