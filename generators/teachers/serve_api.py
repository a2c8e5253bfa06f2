"""OpenAI's request and answer shapes for ``litho serve``: parsing with limits, bodies, stream events.

The shapes are those of OpenAI's API reference (Chat Completions and legacy Completions, their
``chat.completion.chunk`` / ``text_completion`` stream events and the ``{"error": {...}}`` body),
held to the official ``openai`` client in tests/generators/teachers/test_serve_openai.py. What is
not supported (log-probabilities, tools, logit bias, presence/frequency penalties, echo, suffix) is
refused with a 400 that names the field, never silently ignored.

**Seeds.** Choice ``i`` of a prompt draws under litho's row key of the id ``"<seed>/<i>"``
(:func:`draw_id`; generators/teachers/sampling.py), so its text depends on the prompt, the sampling
settings, the seed and ``i`` only, never on the other requests in its micro-batch; choice 0 of an
``n=2`` request is the answer of the same request with ``n=1``. A request without ``seed`` gets a
random one, as OpenAI's API samples anew on every call.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace

from generators.errors import ConfigError
from generators.teachers.contract import Request, SamplingParams
from generators.teachers.structure import Structure


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; past these the server answers 413 (body) or 400 (the rest).

    Args:
        max_body_bytes: Largest request body read.
        max_tokens: Largest ``max_tokens`` / ``max_completion_tokens``.
        max_n: Most choices per prompt (``n``).
        max_prompts: Most prompts in one ``/v1/completions`` request.
    """

    max_body_bytes: int = 4 << 20
    max_tokens: int = 4096
    max_n: int = 16
    max_prompts: int = 64


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.kind = "server_error" if status >= 500 else "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def draw_id(seed: int, choice: int) -> str:
    """The request id whose row key draws choice ``choice`` of a request seeded ``seed``."""
    return f"{seed}/{choice}"


@dataclass(frozen=True)
class Parsed:
    """One OpenAI request, checked: its prompts, ``n`` choices each, and how to answer."""

    kind: str  # "chat" or "completions"
    prompts: tuple[tuple[dict, ...], ...]  # one conversation per prompt
    sampling: SamplingParams
    structure: Structure | None
    seed: int
    n: int
    stream: bool
    include_usage: bool

    def requests(self) -> list[Request]:
        """The teacher requests, prompt-major: choice ``i`` of prompt ``p`` is at ``p * n + i``."""
        return [
            Request(draw_id(self.seed, i), p, self.structure) for p in self.prompts for i in range(self.n)
        ]


# OpenAI field -> (SamplingParams field, type, check); max_completion_tokens is the newer name.
_FIELDS = {
    "max_tokens": ("max_new_tokens", int, lambda v, lim: 1 <= v <= lim.max_tokens),
    "max_completion_tokens": ("max_new_tokens", int, lambda v, lim: 1 <= v <= lim.max_tokens),
    "temperature": ("temperature", float, lambda v, lim: 0 <= v <= 100),
    "top_p": ("top_p", float, lambda v, lim: 0 < v <= 1),
    "top_k": ("top_k", int, lambda v, lim: v >= -1),
    "min_p": ("min_p", float, lambda v, lim: 0 <= v <= 1),
    "repetition_penalty": ("repetition_penalty", float, lambda v, lim: v > 0),
}
# Fields that would change the answer and are not implemented: refused unless absent or off.
_UNSUPPORTED = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "echo": (False,),
    "best_of": (1,),
    "logit_bias": ({},),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "suffix": ("",),
    "tools": ([],),
    "functions": ([],),
}


def parse_request(kind: str, raw: bytes, defaults: SamplingParams, limits: Limits) -> Parsed:
    """Check an OpenAI request body and turn it into litho requests; :class:`ApiError` (400) if bad."""
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key, off in _UNSUPPORTED.items():
        if body.get(key) is not None and body[key] not in off:
            raise ApiError(400, f"{key} is not supported by litho serve; leave it out", key)
    changes = {}
    for key, (field, cast, ok) in _FIELDS.items():
        value = body.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (cast is int and value != int(value))
        ):
            raise ApiError(400, f"{key} must be a number{' (an integer)' if cast is int else ''}", key)
        if not ok(cast(value), limits):
            limit = f" (this server's limit is {limits.max_tokens})" if field == "max_new_tokens" else ""
            raise ApiError(400, f"{key}={value} is out of range{limit}", key)
        changes[field] = max(0, cast(value)) if key == "top_k" else cast(value)
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise ApiError(400, "stop must be a string or a list of strings", "stop")
        changes["stop"] = tuple(stop)
    n = _integer(body, "n", 1, 1, limits.max_n)
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbits(31)
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ApiError(400, "seed must be an integer", "seed")
    stream = body.get("stream") or False
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise ApiError(400, "stream must be true or false and stream_options an object", "stream")
    prompts = _chat_prompts(body) if kind == "chat" else _plain_prompts(body, limits)
    try:
        sampling = replace(defaults, seed=0, **changes)
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None
    structure = parse_structure(body)
    include_usage = bool(options.get("include_usage"))
    return Parsed(kind, prompts, sampling, structure, seed, n, stream, include_usage)


def _integer(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{key}={value!r}: give an integer in [{low}, {high}]", key)
    return value


def _chat_prompts(body: dict) -> tuple[tuple[dict, ...], ...]:
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        raise ApiError(400, "messages must be a non-empty list of {role, content}", "messages")
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content
        ):
            content = "".join(str(p.get("text", "")) for p in content)  # text parts only
        if not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise ApiError(
                400, "messages must be a non-empty list of {role, content} with string values", "messages"
            )
        out.append({"role": m["role"], "content": content})
    return (tuple(out),)


def _plain_prompts(body: dict, limits: Limits) -> tuple[tuple[dict, ...], ...]:
    """``/v1/completions`` prompts (a string or a list of strings), each sent as one user message."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not (isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts)):
        raise ApiError(400, "prompt must be a string or a non-empty list of strings (no token ids)", "prompt")
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"{len(prompts)} prompts: give at most {limits.max_prompts}", "prompt")
    return tuple(({"role": "user", "content": p},) for p in prompts)


def parse_structure(body: dict) -> Structure | None:
    """The structure a request asks for: OpenAI's ``response_format`` (``json_schema``, or
    ``json_object`` for any JSON object) or vLLM's ``structured_outputs`` (``json`` or ``regex``)."""
    fmt, outputs = body.get("response_format"), body.get("structured_outputs")
    try:
        if isinstance(outputs, dict) and outputs.get("regex") is not None:
            return Structure.from_config({"regex": outputs["regex"]}, "structured_outputs")
        if isinstance(outputs, dict) and outputs.get("json") is not None:
            return Structure.from_config({"json_schema": outputs["json"]}, "structured_outputs")
        if outputs is not None:
            raise ApiError(
                400, "structured_outputs: give {json: <schema>} or {regex: <pattern>}", "structured_outputs"
            )
        if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
            return None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            return Structure.json({"type": "object"})
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            return Structure.from_config({"json_schema": spec.get("schema")}, "response_format")
    except ConfigError as exc:
        raise ApiError(400, str(exc), "response_format") from None
    raise ApiError(
        400, "response_format: give {type: json_schema, json_schema: {schema: ...}}, json_object or text",
        "response_format",
    )  # fmt: skip
