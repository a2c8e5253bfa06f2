"""Texts with explicit annotation layers: key terms, claims, reasoning steps, relations.

The teacher is small, so each layer is its own short request, asked about a text that is either
written first by the teacher (from a topic) or taken from a seed corpus. By default
(``structured``) a layer is asked for as a JSON object whose schema the teacher's decoding is held
to (:mod:`generators.teachers.structure`); otherwise in a line-based format ("one per line") parsed
forgivingly (bullets, numbering, bold, ``;``-joined lists). Either way the items are checked where
they can be: a key term must occur in the text, a relation must have a head, a relation and a tail. Layers become structured columns; with ``inline`` they are also
rendered into ``text`` in the markup documented in docs/formats.md.
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
from generators.text import STOPWORDS

LAYERS = {
    "terms": "List the key terms of the text, one per line, most important first. Write only the terms.",
    "claims": "List the main claims the text makes, one short sentence per line.",
    "steps": "List the steps of reasoning or explanation in the text, in order, one per line.",
    "relations": "List relations between key terms of the text, one per line, in the form: "
    "term -> relation -> term",
}
WRITE = (
    "Write a short explanatory text about {topic} ({domain}, {subdomain}) for {audience}. About {words} "
    "words of plain prose: no title, no lists, no closing remarks."
)
SYSTEM = "You are an expert author of clear, accurate educational material."
ANNOTATOR = "You annotate texts carefully and briefly."
BULLET = re.compile(r"^(?:[-*•·+]+|\d+\s*[.):]|\(?[a-zA-Z]\)|step\s*\d+\s*[.:)-]?)\s+", re.I)
# "1. First claim. 2. Second claim." on one line: split before each number that follows a sentence end.
INLINE_NUMBER = re.compile(r"(?<=[.!?])\s+(?=\d+[.)]\s)")
QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|`([^`]+)`')
ARROW = re.compile(r"\s*(?:-+>|→|=>|—>|⟶)\s*")
MIN_WORDS = {"terms": 1, "claims": 3, "steps": 2}
MAX_WORDS = 32  # words of one claim or step in structured mode
MAX_TERM_WORDS = 6
# Structured mode: each layer is a JSON object the teacher's decoding is held to (generators/teachers/structure.py).
# No quoted placeholders in the examples: a 135M teacher copies "..." and "term" into its answer.
LAYERS_JSON = {
    "terms": "List the key terms of the text, most important first, each copied from the text. "
    'Answer in JSON: {"terms": [...]}',
    "claims": 'List the main claims the text makes, one short sentence each. Answer in JSON: {"claims": [...]}',
    "steps": 'List the steps of reasoning or explanation in the text, in order. Answer in JSON: {"steps": [...]}',
    "relations": "List relations between key terms of the text. Answer in JSON: "
    '{"relations": [{"head": ..., "relation": ..., "tail": ...}, ...]}, each head and tail a key term of the text',
}
# What an item may look like: it starts with a letter (terms and relation parts also with a digit, _ or
# "(") and holds no newline, bracket or brace, so the teacher cannot close the JSON inside a string
# ('["]}  # note ...') or number items ("1.1.1.1"). Measured with bench/bench_structured.py.
# Claims and steps also need as many words as their checks ask (MIN_WORDS): "Claim 1" and "step1"
# were the teacher's most common items before.
NAME_PATTERN = r'^[A-Za-z0-9_(][^\n\[\]{}"]*$'
_WORD = r"[^\n\[\]{} ]+"
ITEM_PATTERN = {
    "terms": NAME_PATTERN,
    "claims": rf"^[A-Za-z(][^\n\[\]{{}} ]*( {_WORD}){{{MIN_WORDS['claims'] - 1},{MAX_WORDS - 1}}}$",
    "steps": rf"^[A-Za-z(][^\n\[\]{{}} ]*( {_WORD}){{{MIN_WORDS['steps'] - 1},{MAX_WORDS - 1}}}$",
    "relations": NAME_PATTERN,
}
# Terms and relation parts are bounded in characters, claims and steps in words: llguidance cannot
# intersect a pattern that repeats a group with a length bound (the matcher would refuse every token).
ITEM_CHARS = {"terms": 60, "relations": 60}


class LayeredGenerator(PlannedGenerator):
    """Plans ``n`` texts, each followed by one annotation request per layer.

    Args:
        layers: Layer names to ask for, in order (subset of :data:`LAYERS`).
        required_layers: Rows where one of these parsed empty are dropped as ``layers_unparsed``.
        inline: Also render the layers into ``text``: ``before`` or ``after`` the body, or null.
        max_items: Items kept per layer.
        audiences: Audiences of the written texts (subset of ``textbook.AUDIENCES``).
        topics_file: TSV of ``domain, subdomain, topic``; the built-in list when empty.
        domains: Keep only topics of these domains.
        words: Length of the written text, in words.
        seed_file: Annotate seed texts instead of writing new ones.
        text_column, id_column, seed_split, max_words, min_words, max_docs: Seed corpus settings
            (as for the rephrase generator).
        system: System prompt of the writing call.
        structured: Ask for each layer as JSON and hold the teacher's decoding to its schema
            (:func:`layer_schema`); off: the line-based format with forgiving parsing.
    """

    name = "layered"
    columns = ("topic", "domain", "subdomain", "audience", "variant")
    output_columns = (
        "text",
        "body",
        "layers_missing",
        *(f"layer_{n}" for n in LAYERS),
        *(f"n_{n}" for n in LAYERS),
    )

    def __init__(
        self,
        layers: list[str] | None = None,
        required_layers: list[str] | None = None,
        inline: str | None = None,
        max_items: int = 12,
        audiences: list[str] | None = None,
        topics_file: str | None = None,
        domains: list[str] | None = None,
        words: int = 120,
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
        self.layers = _pick(layers, LAYERS, "generator.layers")
        self.required = _pick(required_layers, LAYERS, "generator.required_layers") if required_layers else []
        if set(self.required) - set(self.layers):
            raise ConfigError(f"generator.required_layers={self.required}: each must be in generator.layers")
        if inline not in (None, "before", "after"):
            raise ConfigError(f"generator.inline={inline}: use before, after or null")
        self.inline = inline
        self.max_items = max_items
        self.audiences = _pick(audiences, AUDIENCES, "generator.audiences")
        self.topics = None if seed_file else load_topics(topics_file, domains)
        self.words = words
        self.seeds = SeedSource(seed_file, text_column, id_column, seed_split, max_words, min_words, max_docs)
        self.system = system
        self.offset = 0 if seed_file else 1  # teacher calls before the first layer
        self.max_steps = self.offset + len(self.layers)

    def build_messages(self, row: dict) -> list[dict]:
        """The first call: write the text, or (seed texts) ask for the first layer (pure: no I/O)."""
        if row.get("source_text"):
            return annotate_messages(row["source_text"], self.layers[0], self.structured)
        user = WRITE.format(
            topic=row["topic"],
            domain=row["domain"],
            subdomain=row["subdomain"],
            audience=AUDIENCES[row["audience"]],
            words=self.words,
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def body(self, row: dict, completions: list[Completion]) -> str:
        if row.get("source_text"):
            return row["source_text"]
        return (
            step_text(completions[0]) if completions and completions[0].finish_reason != FINISH_ERROR else ""
        )

    def followup(self, row: dict, completions: list[Completion]) -> list[dict] | None:
        body = self.body(row, completions)
        k = len(completions) - self.offset
        if not body or k >= len(self.layers):
            return None
        return annotate_messages(body, self.layers[k], self.structured)

    def step_structure(self, row: dict, step: int) -> Structure | None:
        """The schema of a layer's call (structured mode); the writing call is free text."""
        k = step - (0 if row.get("source_text") else 1)
        if not self.structured or k < 0 or k >= len(self.layers):
            return None
        return Structure.json(layer_schema(self.layers[k], self.max_items))

    def finish(self, row: dict, completions: list[Completion]) -> dict:
        body = self.body(row, completions)
        raw = {
            name: completions[self.offset + i]
            for i, name in enumerate(self.layers)
            if self.offset + i < len(completions)
        }
        parse = parse_json_layer if self.structured else parse_layer
        # A JSON answer is parsed as it came (a cut one keeps its complete items), lines after trimming.
        texts = {name: c.text if self.structured else step_text(c) for name, c in raw.items()}
        parsed = {name: parse(name, texts[name], body, self.max_items) for name in raw}
        layers = {name: parsed.get(name, []) for name in LAYERS}
        out = {f"layer_{name}": json.dumps(items, ensure_ascii=False) for name, items in layers.items()}
        out.update({f"n_{name}": len(items) for name, items in layers.items()})
        out.update(
            body=body,
            text=render(body, {n: layers[n] for n in self.layers}, self.inline),
            layers_missing=",".join(n for n in self.layers if not layers[n]),
            steps_truncated=sum(c.finish_reason == FINISH_LENGTH for c in completions),
            finish_reason=FINISH_ERROR
            if any(c.finish_reason == FINISH_ERROR for c in completions)
            else FINISH_STOP,
        )
        return out

    def axes(self) -> tuple:
        return (self.seeds.load() if self.topics is None else self.topics), self.audiences

    def make_row(self, variant: int, picks: tuple) -> dict:
        subject, audience = picks
        return {"generator": self.name, "audience": audience, "variant": variant, **subject_columns(subject)}

    def id_content(self, row: dict, messages: list[dict]) -> dict:
        prompts = [(LAYERS_JSON if self.structured else LAYERS)[name] for name in self.layers]
        content = {**super().id_content(row, messages), "layers": self.layers, "prompts": prompts}
        if self.structured:
            content["schemas"] = [layer_schema(name, self.max_items) for name in self.layers]
        return content


def annotate_messages(body: str, layer: str, structured: bool = False) -> list[dict]:
    ask = (LAYERS_JSON if structured else LAYERS)[layer]
    return [
        {"role": "system", "content": ANNOTATOR},
        {"role": "user", "content": f"Text:\n{body}\n\n{ask}"},
    ]


def layer_schema(name: str, max_items: int) -> dict:
    """The JSON schema of one layer's answer: ``{name: [items]}``, items bounded in number and length
    so that an answer fits the token limit."""
    text = {"type": "string", "minLength": 2, "pattern": ITEM_PATTERN[name]}
    if name in ITEM_CHARS:
        text["maxLength"] = ITEM_CHARS[name]
    if name == "relations":
        keys = ("head", "relation", "tail")
        item = {"type": "object", "properties": dict.fromkeys(keys, text), "required": list(keys),
                "additionalProperties": False}  # fmt: skip
    else:
        item = text
    fewest = 1 if name == "relations" else min(2, max_items)  # one term alone is mostly the topic's name
    items = {"type": "array", "items": item, "minItems": fewest, "maxItems": max_items}
    return {"type": "object", "properties": {name: items}, "required": [name], "additionalProperties": False}


def parse_json_layer(name: str, text: str, body: str, max_items: int = 12) -> list:
    """A structured layer's items (a JSON answer cut by the token limit keeps its complete items),
    checked as :func:`parse_layer` checks lines."""
    value = parse_partial_json(text)
    items = value.get(name) if isinstance(value, dict) else None
    if not isinstance(items, list):
        return []
    if name == "relations":
        keys = ("head", "relation", "tail")
        items = [
            " -> ".join(str(i[k]) for k in keys)
            for i in items
            if isinstance(i, dict) and all(i.get(k) for k in keys)
        ]
    return check_items(name, [str(i) for i in items if isinstance(i, str | int | float)], body, max_items)


def _items(text: str) -> list[str]:
    """Lines without bullets, numbering, bold or quotes; a single ``;``-joined line is split."""
    lines = [part.strip() for ln in text.splitlines() for part in INLINE_NUMBER.split(ln) if part.strip()]
    if len(lines) == 1 and ";" in lines[0]:
        lines = [p.strip() for p in lines[0].split(";")]
    items = []
    for line in lines:
        line = BULLET.sub("", line.replace("**", "").replace("__", "")).strip().strip('"“”').strip()
        if line and not line.endswith(":"):  # "Here are the key terms:" and similar headers
            items.append(line)
    return items


def parse_layer(name: str, text: str, body: str, max_items: int = 12) -> list:
    """Parse one layer's line-based answer; items that fail the layer's check are left out."""
    return check_items(name, _items(text), body, max_items)


def check_items(name: str, lines: list[str], body: str, max_items: int = 12) -> list:
    """The items of a layer that pass its check, without repeats: a key term must occur in the text,
    a relation must read ``head -> relation -> tail``, claims and steps need a few words."""
    seen, out = set(), []
    lowered = body.lower()
    for line in lines:
        for item in _term_candidates(line) if name == "terms" else [line]:
            if name == "relations":
                parts = [p.strip(" .") for p in ARROW.split(item)]
                if len(parts) != 3 or not all(parts):
                    continue
                value = {"head": parts[0], "relation": parts[1], "tail": parts[2]}
            elif name == "terms":
                if (
                    len(item.split()) > MAX_TERM_WORDS
                    or item.lower() in STOPWORDS
                    or not _occurs(item, lowered)
                ):
                    continue
                value = item
            elif len(item.split()) < MIN_WORDS[name]:
                continue
            else:
                value = item
            if item.lower() not in seen:
                seen.add(item.lower())
                out.append(value)
    return out[:max_items]


def _term_candidates(line: str) -> list[str]:
    """Quoted or backticked spans when the line has any ('The key terms are "A", "B"'), else the line
    without a trailing definition ("term: meaning", "term - meaning") or parenthesis."""
    quoted = [q.strip() for q in QUOTED.findall(line) for q in q if q.strip()]
    if quoted:
        return quoted
    line = re.sub(r"\s*[:–—-]\s+.*$", "", line)
    return [re.sub(r"\s*\([^)]*\)\s*$", "", line).strip(" .,")]


def _occurs(term: str, lowered_body: str) -> bool:
    """The term occurs in the text as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(term.lower())}(?!\w)", lowered_body) is not None


def render(body: str, layers: dict[str, list], inline: str | None) -> str:
    """``body`` with the layers as ``<name>`` blocks, one item per line (docs/formats.md)."""
    if not inline:
        return body
    blocks = []
    for name, items in layers.items():
        if not items:
            continue
        lines = [
            f"{i['head']} -> {i['relation']} -> {i['tail']}" if name == "relations" else str(i) for i in items
        ]
        blocks.append(f"<{name}>\n" + "\n".join(lines) + f"\n</{name}>")
    parts = [*blocks, body] if inline == "before" else [body, *blocks]
    return "\n\n".join(parts)
