"""A deterministic stand-in teacher for orchestration tests only (never the default)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence

import xxhash

from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
)
from generators.teachers.stream import count_tokens

WORDS = (
    "model data token signal structure layer field pattern meaning density focus attention "
    "corpus sample gradient weight circuit theorem example proof measure rate bound"
).split()


class DummyTeacher:
    """Writes a text derived from the prompt and the request id, with no model.

    Hash-selected requests can be made to fail, to hit the token limit or to return the same
    text as another request, so tests can exercise every drop reason and the dedup path.

    Args:
        name: Name recorded in the output.
        words: Words per text.
        error_rate: Share of requests answered with an error.
        truncate_rate: Share of requests answered with ``finish_reason="length"``.
        duplicate_rate: Share of requests answered with one shared text (exact duplicates).
        sampling: Keyword arguments of :class:`SamplingParams` (only recorded).
        seconds_per_request: Time each request takes (a sleep), so fault tests can stop a run mid-phase.
    """

    def __init__(
        self,
        name: str = "dummy",
        words: int = 80,
        error_rate: float = 0.0,
        truncate_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        sampling: dict | None = None,
        seconds_per_request: float = 0.0,
        **_ignored,
    ):
        self.name = name
        self.words = words
        self.rates = (error_rate, truncate_rate, duplicate_rate)
        self.sampling = SamplingParams.from_config(sampling)
        self.seconds_per_request = float(seconds_per_request)

    counts_tokens = True  # as each request is answered, like a real backend per decode step

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        out = []
        for request in requests:
            if self.seconds_per_request:
                time.sleep(self.seconds_per_request)
            out.append(self._one(request))
            count_tokens(self, out[-1].completion_tokens)
        return out

    def _one(self, request: Request) -> Completion:
        u = xxhash.xxh64_intdigest(request.id.encode()) / 2**64
        error_rate, truncate_rate, duplicate_rate = self.rates
        if u < error_rate:
            return Completion(request.id, "", finish_reason=FINISH_ERROR, error="dummy: planned failure")
        prompt = " ".join(m["content"] for m in request.messages if m["role"] == "user")
        key = "shared" if u > 1 - duplicate_rate else request.id
        rng = random.Random(xxhash.xxh64_intdigest(key.encode()))
        if request.structure is not None:
            return self._structured(request, prompt, rng)
        body = [rng.choice(WORDS) for _ in range(self.words)]
        sentences = [" ".join(body[i : i + 10]).capitalize() + "." for i in range(0, len(body), 10)]
        text = (prompt[:120] + " " if key != "shared" else "") + " ".join(sentences)
        finish = FINISH_LENGTH if error_rate <= u < error_rate + truncate_rate else FINISH_STOP
        if finish == FINISH_LENGTH:
            text += " and then the text stops in the middle of"
        tokens = len(text.split())
        return Completion(request.id, text, len(json.dumps(list(request.messages)).split()), tokens, finish)

    def _structured(self, request: Request, prompt: str, rng: random.Random) -> Completion:
        """A JSON instance of the request's schema made of the prompt's words (a regex gets plain
        text, which the teacher contract then marks invalid)."""
        from generators.teachers.structure import check

        words = [w.strip(".,;:!?\"'()") for w in prompt.split()] or WORDS
        schema = request.structure.schema
        text = json.dumps(instance(schema, [w for w in words if w] or WORDS, rng)) if schema else prompt[:80]
        completion = Completion(request.id, text, len(prompt.split()), len(text.split()), FINISH_STOP)
        completion.invalid = check(request.structure, text)
        return completion


def instance(schema: dict, words: list[str], rng: random.Random):
    """A small value that satisfies the common JSON schema keywords (type, properties, required,
    items, min/maxItems, min/maxLength, minimum/maximum, enum), for the dummy teacher only."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(v, words, rng) for k, v in props.items()}
    if kind == "array":
        low, high = schema.get("minItems", 1), schema.get("maxItems", 3)
        return [
            instance(schema.get("items", {"type": "string"}), words, rng)
            for _ in range(max(low, min(high, 3)))
        ]
    if kind == "integer":
        return int(
            schema.get("minimum", 0)
            + rng.randrange(max(1, schema.get("maximum", 9) - schema.get("minimum", 0) + 1))
        )
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return True
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    text = text[: schema.get("maxLength", 200)]
    return text.ljust(schema.get("minLength", 0), "x")
