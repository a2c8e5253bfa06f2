"""Textbook-style generation: topic × format × audience mixing (in the spirit of Cosmopedia)."""

from __future__ import annotations

from generators.errors import ConfigError
from generators.prompts.plan import PlannedGenerator
from generators.prompts.topics import load_topics

# Each format tells the teacher what shape of text to write. Kept short: small teachers follow
# short instructions better than long ones.
FORMATS = {
    "textbook_section": "a textbook section that explains the idea step by step, with one concrete example",
    "lecture": "the transcript of a short lecture, spoken by the lecturer, building from basics to the key result",
    "qa": "a set of 3 to 5 questions with precise answers, each question on its own line starting with 'Q:' "
    "and each answer starting with 'A:'",
    "worked_example": "a worked example: state a concrete problem, then solve it step by step and check the result",
    "dense_notes": "dense study notes: short declarative sentences, key terms and their definitions, "
    "no filler words",
}

AUDIENCES = {
    "middle_school": "middle-school students",
    "high_school": "high-school students",
    "undergraduate": "undergraduate students",
    "expert": "domain experts who want precision",
    "general": "curious adults without a technical background",
}

SYSTEM = "You are an expert author of clear, accurate educational material."


class TextbookGenerator(PlannedGenerator):
    """Plans ``n`` textbook-style requests from the built-in (or a given) topic list.

    Args:
        formats: Format keys to use (subset of :data:`FORMATS`); all by default.
        audiences: Audience keys to use (subset of :data:`AUDIENCES`); all by default.
        topics_file: TSV of ``domain, subdomain, topic``; the built-in list when empty.
        domains: Keep only topics of these domains.
        words: Length to ask for, in words.
        system: System prompt.
    """

    name = "textbook"
    columns = ("domain", "subdomain", "topic", "format", "audience", "variant")

    def __init__(
        self,
        formats: list[str] | None = None,
        audiences: list[str] | None = None,
        topics_file: str | None = None,
        domains: list[str] | None = None,
        words: int = 150,
        system: str = SYSTEM,
    ):
        self.formats = _pick(formats, FORMATS, "generator.formats")
        self.audiences = _pick(audiences, AUDIENCES, "generator.audiences")
        self.topics = load_topics(topics_file, domains)
        self.words = words
        self.system = system

    def build_messages(self, row: dict) -> list[dict]:
        """The chat messages for one plan row (pure: no I/O)."""
        user = (
            f"Write {FORMATS[row['format']]}. Topic: {row['topic']} ({row['domain']}, {row['subdomain']}). "
            f"Audience: {AUDIENCES[row['audience']]}. About {self.words} words. "
            "Start directly with the content: no title, no preamble, no closing remarks."
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def axes(self) -> tuple:
        return self.topics, self.formats, self.audiences

    def make_row(self, variant: int, picks: tuple) -> dict:
        topic, fmt, audience = picks
        return {
            "generator": self.name,
            "domain": topic.domain,
            "subdomain": topic.subdomain,
            "topic": topic.topic,
            "format": fmt,
            "audience": audience,
            "variant": variant,
        }


def _pick(chosen: list[str] | None, known: dict, key: str) -> list[str]:
    if not chosen:
        return list(known)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"{key}: unknown {unknown}; choose from {sorted(known)}")
    return list(chosen)
