"""``litho serve`` answers: OpenAI's response bodies and the server-sent events of ``stream=True``.

A stream follows OpenAI's API reference as the official client reads it: per chat choice a first
chunk with the assistant role, a chunk with the text and a last chunk with ``finish_reason``; per
legacy completion choice one chunk with the text and its ``finish_reason``; with
``stream_options.include_usage`` every chunk carries ``"usage": null`` and one more chunk with no
choices carries the usage; then ``data: [DONE]``. The teacher contract returns whole completions, so
a choice's text comes as one delta once its micro-batch is done (no token-by-token stream).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence

from generators.teachers.contract import Completion
from generators.teachers.sampling import SAMPLER_VERSION
from generators.teachers.serve_api import Parsed


class Answer:
    """The completions of one parsed request, ready to be sent as one body or as events.

    Args:
        parsed: The request.
        completions: One per teacher request of ``parsed.requests()`` (prompt-major).
        model: The served model's name.
    """

    def __init__(self, parsed: Parsed, completions: Sequence[Completion], model: str):
        self.parsed, self.completions, self.model = parsed, list(completions), model
        chat = parsed.kind == "chat"
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.object = "chat.completion" if chat else "text_completion"
        self.created = int(time.time())

    @property
    def usage(self) -> dict:
        """Prompt tokens counted once per prompt (as OpenAI does for ``n > 1``), output tokens per choice."""
        n = self.parsed.n
        prompt = sum(c.prompt_tokens for c in self.completions[::n])
        output = sum(c.completion_tokens for c in self.completions)
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": SAMPLER_VERSION}  # fmt: skip

    def body(self) -> dict:
        """The non-streamed response."""
        choices = []
        for index, c in enumerate(self.completions):
            if self.parsed.kind == "chat":
                choice = {"index": index, "message": {"role": "assistant", "content": c.text}}
            else:
                choice = {"index": index, "text": c.text}
            choices.append({**choice, "logprobs": None, "finish_reason": c.finish_reason})
        return {**self._head(self.object), "choices": choices, "usage": self.usage}

    def events(self) -> Iterator[bytes]:
        """The server-sent events of ``stream=True``, ending with ``data: [DONE]``."""
        chat = self.parsed.kind == "chat"
        obj = "chat.completion.chunk" if chat else "text_completion"
        for index, c in enumerate(self.completions):
            if chat:
                yield self._event(obj, [_delta(index, {"role": "assistant", "content": ""})])
                yield self._event(obj, [_delta(index, {"content": c.text})])
                yield self._event(obj, [_delta(index, {}, c.finish_reason)])
            else:  # one chunk: the client's legacy Completion type wants a finish_reason in every choice
                yield self._event(obj, [_text(index, c.text, c.finish_reason)])
        if self.parsed.include_usage:
            yield _sse({**self._head(obj), "choices": [], "usage": self.usage})
        yield b"data: [DONE]\n\n"

    def _event(self, obj: str, choices: list[dict]) -> bytes:
        chunk = {**self._head(obj), "choices": choices}
        if self.parsed.include_usage:
            chunk["usage"] = None
        return _sse(chunk)


def _delta(index: int, delta: dict, finish: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text(index: int, text: str, finish: str) -> dict:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
