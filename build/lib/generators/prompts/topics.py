"""The topic lists textbook-style generators draw from: ``domain<TAB>subdomain<TAB>topic`` files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from generators.errors import ConfigError


@dataclass(frozen=True)
class Topic:
    domain: str
    subdomain: str
    topic: str


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
