"""SFT pairs and multi-turn conversations: the teacher writes the user's turns, then the answers.

A row takes ``2 * turns`` teacher calls (see :mod:`generators.prompts.protocol`): call 0 writes the first
user message from a seed (a topic, or a seed document), call 1 answers it, call 2 writes a
follow-up user message from the conversation so far, and so on. When the seed is a document,
the answering calls see it in their system prompt as reference; the stored conversation holds
only the user and assistant turns. Output: ``messages`` (JSON list of ``{role, content}``) and
``text`` (the conversation as plain ``User:`` / ``Assistant:`` paragraphs, for the scorers).
"""

from __future__ import annotations

import json
import re

from generators.errors import ConfigError
from generators.prompts.plan import PlannedGenerator
from generators.prompts.protocol import step_text
from generators.prompts.seeds import SeedSource, subject_columns
from generators.prompts.textbook import AUDIENCES, _pick
from generators.prompts.topics import load_topics
from generators.teachers.contract import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, Completion
from generators.teachers.structure import Structure, parse_partial_json

KINDS = {
    "question": "one question that {who} might ask an AI assistant about {topic} ({subdomain})",
    "howto": "one request in which {who} asks an AI assistant how to do something that involves {topic} "
    "({subdomain})",
    "task": "one short writing task that {who} might give an AI assistant about {topic} ({subdomain}), such as "
    "a summary, a list or an example",
}
ONLY = "Write only the user's message, nothing else."
# Structured mode: the user turn comes back as {"message": ...}, decoding held to a schema: a
# question (one sentence from a capital letter to its only "?", no newline) where the turn asks one
# (question and howto kinds, seed documents, follow-ups), any one-paragraph message for tasks.
ONLY_JSON = 'Answer in JSON: {"message": ...}'
QUESTION = r"^[A-Z][^\n?]*\?$"
MESSAGE = r"^[A-Z][^\n]*$"


def user_schema(pattern: str) -> dict:
    message = {"type": "string", "minLength": 10, "maxLength": 300, "pattern": pattern}
    return {"type": "object", "properties": {"message": message}, "required": ["message"],
            "additionalProperties": False}  # fmt: skip


SYSTEM = "You are a helpful, accurate and concise AI assistant."
WRITER_SYSTEM = "You write realistic messages that users send to an AI assistant."
LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:user|question|q|follow-up(?: question)?|message)\s*(?:\*\*)?\s*[:：]\s*", re.I
)
VERSION = 2  # bump when the follow-up prompts change: it is part of every request id


class InstructGenerator(PlannedGenerator):
    """Plans ``n`` conversations of ``turns`` user/assistant exchanges.

    Args:
        turns: User/assistant exchanges per conversation (1 = single-turn SFT pairs).
        kinds: First-message kinds (subset of :data:`KINDS`) when seeding from topics.
        audiences: Who writes the user turns (subset of ``textbook.AUDIENCES``).
        topics_file: TSV of ``domain, subdomain, topic``; the built-in list when empty.
        domains: Keep only topics of these domains.
        seed_file: Seed documents instead of topics (Parquet, JSONL or a ``save_to_disk`` directory).
        text_column: Column of the seed documents holding the text.
        id_column: Column holding a source id to keep (optional).
        seed_split: Split to read from a saved ``DatasetDict``.
        max_words: Seed documents are cut into chunks of at most this many words.
        min_words: Chunks shorter than this are skipped.
        max_docs: Read at most this many seed documents (all when null).
        system: System prompt of the answering calls (and of the stored conversation: not stored).
        structured: The user-turn calls answer ``{"message": ...}`` with decoding held to
            :func:`user_schema` (:mod:`generators.teachers.structure`), so no greeting, label or
            second message surrounds the turn; off: free text, cleaned by :func:`clean_user_turn`.
    """

    name = "instruct"
    columns = ("kind", "audience", "topic", "domain", "subdomain", "turns", "variant")
    output_columns = ("messages", "text", "n_turns", "steps_truncated", "steps")

    def __init__(
        self,
        turns: int = 1,
        kinds: list[str] | None = None,
        audiences: list[str] | None = None,
        topics_file: str | None = None,
        domains: list[str] | None = None,
        seed_file: str | None = None,
        text_column: str = "text",
        id_column: str | None = None,
        seed_split: str = "train",
        max_words: int = 200,
        min_words: int = 30,
        max_docs: int | None = None,
        system: str = SYSTEM,
        structured: bool = True,
    ):
        self.structured = bool(structured)
        if not isinstance(turns, int) or turns < 1:
            raise ConfigError(f"generator.turns={turns}: give a positive integer (1 = single-turn pairs)")
        self.turns = turns
        self.max_steps = 2 * turns
        self.kinds = _pick(kinds, KINDS, "generator.kinds")
        self.audiences = _pick(audiences, AUDIENCES, "generator.audiences")
        self.topics = None if seed_file else load_topics(topics_file, domains)
        self.seeds = SeedSource(seed_file, text_column, id_column, seed_split, max_words, min_words, max_docs)
        self.system = system

    def build_messages(self, row: dict) -> list[dict]:
        """The first call: write the opening user message (pure: no I/O)."""
        who = AUDIENCES[row["audience"]]
        if row.get("source_text"):
            user = (
                f"Here is a text:\n\n{row['source_text']}\n\nWrite one question that {who} reading this text "
                f"might ask an AI assistant. The question must make sense without the text. {self.only}"
            )
        else:
            user = "Write " + KINDS[row["kind"]].format(
                who=who, topic=row["topic"], subdomain=row["subdomain"]
            )
            user += f". {self.only}"
        return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]

    @property
    def only(self) -> str:
        """How a user-turn prompt ends: what to answer with."""
        return ONLY_JSON if self.structured else ONLY

    def step_structure(self, row: dict, step: int) -> Structure | None:
        """User turns (even steps) are JSON in structured mode; answers are free text."""
        if not self.structured or step % 2:
            return None
        asks = step > 0 or row.get("source_text") or row.get("kind") != "task"
        return Structure.json(user_schema(QUESTION if asks else MESSAGE))

    def user_turn(self, completion: Completion) -> str:
        """The user's message of a writer call: the JSON ``message`` (structured), or the free text;
        either way cleaned by :func:`clean_user_turn`."""
        if not self.structured:
            return clean_user_turn(step_text(completion))
        value = parse_partial_json(completion.text)
        message = value.get("message") if isinstance(value, dict) else None
        return clean_user_turn(message) if isinstance(message, str) else ""

    def conversation(self, completions: list[Completion]) -> list[dict]:
        """The user / assistant turns written so far (user turns cleaned of labels and extra lines)."""
        turns = []
        for k, completion in enumerate(completions):
            if completion.finish_reason == FINISH_ERROR:
                break
            text = self.user_turn(completion) if k % 2 == 0 else step_text(completion)
            if not text:
                break
            turns.append({"role": "user" if k % 2 == 0 else "assistant", "content": text})
        return turns

    def followup(self, row: dict, completions: list[Completion]) -> list[dict] | None:
        turns = self.conversation(completions)
        if len(turns) < len(completions) or len(completions) >= self.max_steps:
            return None  # an empty or failed turn ends the conversation; the filter drops it
        system = self.system
        if row.get("source_text"):
            system += f"\n\nReference text (use it if it helps):\n{row['source_text']}"
        if len(completions) % 2 == 1:  # a user turn was just written: answer it
            return [{"role": "system", "content": system}, *turns]
        transcript = "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)
        user = (
            f"Here is a conversation between a user and an AI assistant:\n\n{transcript}\n\nWrite the user's "
            f"next message: one short follow-up question about the same subject. {self.only}"
        )
        return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]

    def finish(self, row: dict, completions: list[Completion]) -> dict:
        turns = self.conversation(completions)
        truncated = sum(c.finish_reason == FINISH_LENGTH for c in completions[: len(turns)])
        failed = any(c.finish_reason == FINISH_ERROR for c in completions)
        return {
            "messages": json.dumps(turns, ensure_ascii=False),
            "text": render(turns),
            "n_turns": sum(t["role"] == "assistant" for t in turns),
            "steps_truncated": truncated,
            # Truncated turns were already cut at their last sentence; the cleaner must not cut again.
            "finish_reason": FINISH_ERROR if failed else FINISH_STOP,
        }

    def axes(self) -> tuple:
        if self.topics is None:
            return self.seeds.load(), ["question"], self.audiences
        return self.topics, self.kinds, self.audiences

    def make_row(self, variant: int, picks: tuple) -> dict:
        subject, kind, audience = picks
        row = {
            "generator": self.name,
            "kind": kind,
            "audience": audience,
            "turns": self.turns,
            "variant": variant,
        }
        return {**row, **subject_columns(subject)}

    def id_content(self, row: dict, messages: list[dict]) -> dict:
        return {
            **super().id_content(row, messages),
            "turns": self.turns,
            "system": self.system,
            "version": VERSION,
            **({"structured": [user_schema(QUESTION), user_schema(MESSAGE)]} if self.structured else {}),
        }


def clean_user_turn(text: str) -> str:
    """The user's message from what the writer call returned: its first line asking a question (else its
    first line), without labels, quotes or trailing text."""
    lines = [LABEL.sub("", ln.strip()).strip().strip('"“”*').strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    # Small writers wrap the question in a greeting or a letter: prefer the first line that asks.
    first = next((ln for ln in lines if "?" in ln), lines[0])
    if "?" in first:
        first = first[: first.rindex("?") + 1]
    return first


def render(turns: list[dict]) -> str:
    """Plain-text conversation: ``User: ...`` and ``Assistant: ...`` paragraphs."""
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


__all__ = ["InstructGenerator", "clean_user_turn", "render", "FINISH_STOP"]
