"""An OpenAI-compatible HTTP server in front of any litho teacher (standard library only).

``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models``. Concurrent
requests are micro-batched: a single worker thread collects what arrives within
``batch_wait_s`` (up to ``max_batch`` requests) and answers it with one ``teacher.generate()``
call per distinct sampling setting, so a batched backend sees batches, not single rows.
``/v1/completions`` prompts are sent to the teacher as one user message: the teacher always
applies its chat template. ``response_format`` (``json_schema`` or ``json_object``) and vLLM's
``structured_outputs`` (``json`` or ``regex``) become the request's structure, which an ``hf`` or
``fast`` teacher enforces while decoding (generators/teachers/structure.py). Sampling draws depend on which requests share a batch (one seed per
``generate()`` call), so a request's ``seed`` is honoured per micro-batch, not per request.

    python -m generators.teachers.serve --model embedded:smollm2 --backend fast --port 8000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from generators.errors import ConfigError
from generators.teachers.contract import FINISH_ERROR, Completion, Request, SamplingParams, Teacher
from generators.teachers.structure import Structure

log = logging.getLogger(__name__)
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class _Batcher:
    """One worker thread that answers queued requests in micro-batches."""

    def __init__(self, teacher: Teacher, max_batch: int, wait_s: float):
        self.teacher, self.max_batch, self.wait_s = teacher, max(1, max_batch), wait_s
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="teacher-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: Request, sampling: SamplingParams) -> Completion:
        future: Future = Future()
        self.queue.put((request, sampling, future))
        return future.result()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            items, deadline = [first], time.monotonic() + self.wait_s
            while len(items) < self.max_batch:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)  # finish this batch, then stop
                    break
                items.append(item)
            # A teacher call takes one seed: requests that differ only in seed share a call, under
            # the first one's seed (exact per-request seeds would mean one call per request).
            groups = defaultdict(list)
            for item in items:
                groups[replace(item[1], seed=0)].append(item)
            for group in groups.values():
                self._answer(group[0][1], group)

    def _answer(self, sampling: SamplingParams, group: list) -> None:
        default = self.teacher.sampling
        self.teacher.sampling = sampling  # only this thread calls the teacher
        try:
            completions = self.teacher.generate([request for request, _, _ in group])
        except Exception as exc:  # the contract says never raise; a broken backend still answers
            log.exception("teacher failed on %d requests", len(group))
            completions = [
                Completion(r.id, "", finish_reason=FINISH_ERROR, error=repr(exc)) for r, _, _ in group
            ]
        finally:
            self.teacher.sampling = default
        for (_, _, future), completion in zip(group, completions, strict=True):
            future.set_result(completion)


class TeacherServer(ThreadingHTTPServer):
    """Serve ``teacher`` over HTTP; ``port=0`` picks a free port (see :attr:`url`).

    Args:
        teacher: Any litho teacher (``HFTeacher``, ``FastTeacher``, ``DummyTeacher``, ...).
        host: Interface to bind; keep the loopback default unless the network is trusted.
        port: TCP port; 0 lets the OS choose.
        model_name: Name listed by ``/v1/models``; defaults to ``teacher.name``.
        api_key: When set, requests must send ``Authorization: Bearer <api_key>``.
        max_batch: Most requests answered by one ``generate()`` call.
        batch_wait_s: How long the worker waits for more requests before generating.
    """

    daemon_threads = True

    def __init__(self, teacher: Teacher, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                 api_key: str | None = None, max_batch: int = 256, batch_wait_s: float = 0.01):  # fmt: skip
        super().__init__((host, port), _Handler)
        self.teacher, self.model_name, self.api_key = teacher, model_name or teacher.name, api_key
        self.batcher = _Batcher(teacher, max_batch, batch_wait_s)
        self.ids = itertools.count()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> TeacherServer:
        """Serve from a daemon thread and return at once (tests, notebooks)."""
        threading.Thread(target=self.serve_forever, name="teacher-http", daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.batcher.close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    server: TeacherServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/models":
            model = {"id": self.server.model_name, "object": "model", "owned_by": "litho"}
            self._send(200, {"object": "list", "data": [model]})
        elif path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, _error(f"no route GET {path}", "not_found"))

    def do_POST(self) -> None:
        kind = ROUTES.get(self.path.split("?")[0].rstrip("/"))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if kind is None:
            return self._send(404, _error(f"no route POST {self.path}", "not_found"))
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self._send(401, _error("missing or wrong API key", "invalid_api_key"))
        try:
            payload = json.loads(body or b"null")
            request, sampling = parse_request(
                kind, payload, self.server.teacher.sampling, next(self.server.ids)
            )
        except (BadRequest, ValueError) as exc:
            return self._send(400, _error(str(exc), "invalid_request_error"))
        completion = self.server.batcher.submit(request, sampling)
        if completion.finish_reason == FINISH_ERROR:
            return self._send(500, _error(completion.error or "generation failed", "server_error"))
        self._send(200, render_response(kind, completion, self.server.model_name))

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind}}


class BadRequest(ValueError):
    """A request body the server cannot answer; sent back as HTTP 400 with this message."""


# OpenAI field -> (SamplingParams field, type, check); max_completion_tokens is the newer name.
_FIELDS = {
    "max_tokens": ("max_new_tokens", int, lambda v: v >= 1),
    "max_completion_tokens": ("max_new_tokens", int, lambda v: v >= 1),
    "temperature": ("temperature", float, lambda v: v >= 0),
    "top_p": ("top_p", float, lambda v: 0 < v <= 1),
    "top_k": ("top_k", int, lambda v: v >= -1),
    "repetition_penalty": ("repetition_penalty", float, lambda v: v > 0),
    "seed": ("seed", int, lambda v: True),
}


def parse_request(kind: str, body, defaults: SamplingParams, number: int) -> tuple[Request, SamplingParams]:
    """Turn an OpenAI request body into a litho request and its sampling settings."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("n", 1) != 1 or body.get("stream"):
        raise BadRequest("only n=1 without streaming is supported")
    if kind == "chat":
        messages = body.get("messages")
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not ok:
            raise BadRequest("messages must be a non-empty list of {role, content} with string values")
    else:
        prompt = body.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        messages = [{"role": "user", "content": prompt}]
    changes = {}
    for key, (field, cast, check) in _FIELDS.items():
        value = body.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (cast is int and value != int(value))
        ):
            raise BadRequest(f"{key} must be a number{' (integer)' if cast is int else ''}")
        if not check(cast(value)):
            raise BadRequest(f"{key}={value} is out of range")
        changes[field] = max(0, cast(value)) if key == "top_k" else cast(value)
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise BadRequest("stop must be a string or a list of strings")
        changes["stop"] = tuple(stop)
    structure = parse_structure(body)
    messages = tuple(dict(role=m["role"], content=m["content"]) for m in messages)
    return Request(f"{kind}-{number}", messages, structure), replace(defaults, **changes)


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
            raise BadRequest("structured_outputs: give {json: <schema>} or {regex: <pattern>}")
        if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
            return None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            return Structure.json({"type": "object"})
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            return Structure.from_config({"json_schema": spec.get("schema")}, "response_format")
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    raise BadRequest(
        "response_format: give {type: json_schema, json_schema: {schema: ...}}, json_object or text"
    )


def render_response(kind: str, completion: Completion, model: str) -> dict:
    """The OpenAI response body for one completion."""
    usage = {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": completion.text}}
        obj = "chat.completion"
    else:
        choice, obj = {"index": 0, "text": completion.text, "logprobs": None}, "text_completion"
    choice["finish_reason"] = completion.finish_reason
    return {"id": f"litho-{completion.id}", "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a litho teacher over an OpenAI-compatible API.")
    parser.add_argument(
        "--model", default="embedded:smollm2", help="model spec (see generators.teachers.models)"
    )
    parser.add_argument("--backend", choices=("hf", "fast"), default="fast")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-batch", type=int, default=256, help="requests per generate() call")
    parser.add_argument("--api-key-env", default=None, help="require the key in this environment variable")
    parser.add_argument(
        "--max-new-tokens", type=int, default=256, help="default when a request omits max_tokens"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.backend == "fast":
        from generators.teachers.fast import FastTeacher as backend
    else:
        from generators.teachers.hf import HFTeacher as backend
    teacher = backend(
        args.model, device=args.device, dtype=args.dtype, sampling={"max_new_tokens": args.max_new_tokens}
    )
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    server = TeacherServer(teacher, args.host, args.port, api_key=api_key, max_batch=args.max_batch)
    print(f"serving {teacher.name} ({args.backend}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.batcher.close()


if __name__ == "__main__":
    main()
