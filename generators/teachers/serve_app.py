"""The application behind ``litho serve`` (generators/teachers/serve.py): the micro-batcher and the routes.

One worker thread owns the teacher (:class:`Batcher`); the Starlette handlers are coroutines that
parse a request (generators/teachers/serve_api.py), hand its teacher requests to the worker, wait on
the futures and answer (generators/teachers/serve_render.py). Errors come in OpenAI's error shape;
the API key is compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future

from generators.teachers.contract import FINISH_ERROR, Completion, Request, SamplingParams, Teacher
from generators.teachers.serve_api import ApiError, Limits, parse_request
from generators.teachers.serve_render import Answer

log = logging.getLogger(__name__)


class Batcher:
    """One worker thread that owns the teacher and answers queued requests in micro-batches."""

    def __init__(self, teacher: Teacher, max_batch: int, wait_s: float):
        self.teacher, self.max_batch, self.wait_s = teacher, max(1, max_batch), wait_s
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="teacher-batcher", daemon=True)
        self.thread.start()

    def submit(self, requests: list[Request], sampling: SamplingParams) -> list[Future]:
        futures = [Future() for _ in requests]
        for request, future in zip(requests, futures):
            self.queue.put((request, sampling, future))
        return futures

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
            groups = defaultdict(list)  # the seed is in each request's id, not in its sampling settings
            for item in items:
                groups[item[1]].append(item)
            for sampling, group in groups.items():
                self._answer(sampling, group)

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


def build_app(teacher: Teacher, batcher: Batcher, model_name: str, api_key: str | None, limits: Limits,
              started: threading.Event | None = None):  # fmt: skip
    """The Starlette application (``started`` is set once it serves)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    expected = f"Bearer {api_key}".encode() if api_key else None

    def authorize(request) -> None:
        given = request.headers.get("authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            raise ApiError(
                401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key"
            )

    async def complete(request, kind: str):
        authorize(request)
        parsed = parse_request(
            kind, await read_body(request, limits.max_body_bytes), teacher.sampling, limits
        )
        futures = batcher.submit(parsed.requests(), parsed.sampling)
        completions = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        failed = next((c for c in completions if c.finish_reason == FINISH_ERROR), None)
        if failed is not None:
            raise ApiError(500, failed.error or "generation failed")
        answer = Answer(parsed, completions, model_name)
        if parsed.stream:
            return StreamingResponse(iter(answer.events()), media_type="text/event-stream")
        return JSONResponse(answer.body())

    def openai_errors(handler):
        async def wrapped(request):
            try:
                return await handler(request)
            except ApiError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)

        return wrapped

    async def models(request):
        authorize(request)
        model = {"id": model_name, "object": "model", "created": 0, "owned_by": "litho"}
        return JSONResponse({"object": "list", "data": [model]})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        return JSONResponse(ApiError(status, f"no route {request.method} {request.url.path}").body(), status)

    async def crashed(request, exc):
        log.exception("request failed", exc_info=exc)
        return JSONResponse(ApiError(500, f"internal error: {exc!r}"[:500]).body(), 500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if started is not None:
            started.set()
        yield

    routes = [
        Route("/v1/chat/completions", openai_errors(lambda r: complete(r, "chat")), methods=["POST"]),
        Route("/v1/completions", openai_errors(lambda r: complete(r, "completions")), methods=["POST"]),
        Route("/v1/models", openai_errors(models), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    handlers = {404: not_found, 405: not_found, Exception: crashed}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def read_body(request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes kept; past it a 413 (the rest is read and dropped, up
    to 16x the limit, so the client gets the answer instead of a reset connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > 16 * limit):
        raise ApiError(413, f"request body over {limit} bytes (this server's --max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 16 * limit:
            break
    if size > limit:
        raise ApiError(413, f"request body over {limit} bytes (this server's --max-body-bytes)")
    return b"".join(chunks)
