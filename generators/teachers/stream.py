"""Streaming a teacher: requests submitted one at a time, answered as each finishes, tokens counted as decoded.

The teacher stage (pipeline/generate.py) keeps the requests of several Ray Data batches in flight in
one actor, as Ray Data LLM's vLLM stage does. A backend that answers each request on its own event
loop (``teacher=vllm`` on vLLM's ``AsyncLLM``, ``teacher=openai`` on an async HTTP client) offers
``submit(request) -> Future``; any other backend (``hf``, ``fast``, ``dummy``) is driven by one thread
that takes every waiting request, up to the backend's batch size, into one ``generate()`` call, so
what arrives while a call runs goes into the next one — and ``fast`` takes it into the running call
(``generate_stream``), keeping its continuous batching fed across batches.

Every backend counts the tokens it decodes in a :class:`TokenMeter` (per decode step for ``hf``,
``fast`` and ``vllm``, per answer for ``openai``): the live progress the driver shows.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future

from generators.teachers.contract import FINISH_ERROR, Completion, Request

log = logging.getLogger(__name__)

# Settings of the teacher stage that live in every teacher's config (conf/teacher/stage/), with their
# defaults: they are not the backend's arguments.
STAGE_KEYS = {"checkpoint_rows": 64, "checkpoint_s": 30.0, "price": None}


def split_config(teacher: dict) -> tuple[dict, dict]:
    """A teacher config as ``(backend arguments, stage settings)``."""
    backend = {k: v for k, v in teacher.items() if k not in STAGE_KEYS}
    return backend, {k: teacher.get(k, v) for k, v in STAGE_KEYS.items()}


def check_stage_settings(teacher: dict) -> None:
    """``teacher.checkpoint_rows``, ``teacher.checkpoint_s`` and ``teacher.price`` (the driver checks them
    before Ray starts).

    Raises:
        ConfigError: a count that is not a positive integer, seconds that are not positive, or prices that
            are not ``{prompt: USD, completion: USD}`` per million tokens.
    """
    from generators.errors import ConfigError

    _, stage = split_config(teacher)
    rows, seconds = stage["checkpoint_rows"], stage["checkpoint_s"]
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(
            f"teacher.checkpoint_rows={rows}: give a positive integer (rows per checkpoint group)"
        )
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ConfigError(f"teacher.checkpoint_s={seconds}: give a positive number of seconds")
    price = stage["price"]
    if price is not None and (
        not isinstance(price, dict)
        or set(price) != {"prompt", "completion"}
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in price.values())
    ):
        raise ConfigError(
            f"teacher.price={price}: give USD per million tokens as {{prompt: 0.15, completion: 0.6}} (null = no cost)"
        )


class TokenMeter:
    """Tokens decoded so far by one teacher, rows still in flight included (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.tokens = 0

    def add(self, n: int) -> None:
        if n:
            with self._lock:
                self.tokens += int(n)


def count_tokens(teacher, n: int) -> None:
    """Add ``n`` decoded tokens to ``teacher``'s meter, when a stream gave it one."""
    meter = getattr(teacher, "meter", None)
    if meter is not None:
        meter.add(n)


class LoopThread:
    """An asyncio event loop in a daemon thread: backends that answer requests concurrently run their
    coroutines here and hand back ``concurrent.futures.Future`` objects any thread can wait on."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


class Streamer:
    """One teacher, fed request by request from any thread or event loop. A backend that counts its
    tokens as it decodes them says so (``counts_tokens = True``); any other's are counted per answer.

    Args:
        teacher: A backend (:class:`generators.teachers.contract.Teacher`); its ``meter`` is set here.
        max_batch: Most requests one ``generate()`` call takes (default: the backend's ``batch_size``).
        linger_s: How long a call that could take more requests waits for them.
    """

    def __init__(self, teacher, max_batch: int | None = None, linger_s: float = 0.02):
        self.teacher = teacher
        self.meter = TokenMeter()
        teacher.meter = self.meter
        self.native = callable(getattr(teacher, "submit", None))
        self.max_batch = max(1, int(max_batch or getattr(teacher, "batch_size", 0) or 32))
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue[list[tuple[Request, Future]] | None] = queue.SimpleQueue()
        self._pending: deque[tuple[Request, Future]] = deque()
        self._stopping = False
        self._thread = None
        if not self.native:
            self._thread = threading.Thread(target=self._drive, name="litho-teacher", daemon=True)
            self._thread.start()

    def submit(self, requests: list[Request]) -> list[Future]:
        """Each request's :class:`Completion`, as futures; never raises for one bad row. A list is
        queued at once, so a backend call never takes only the first rows of a batch."""
        if self.native:
            futures = [self.teacher.submit(r) for r in requests]
        else:
            items = [(r, Future()) for r in requests]
            if items:
                self._queue.put(items)
            futures = [f for _, f in items]
        if not getattr(self.teacher, "counts_tokens", False):  # a backend that cannot count per step
            for future in futures:
                future.add_done_callback(lambda f: self.meter.add(f.result().completion_tokens))
        return futures

    async def answer(self, request: Request) -> Completion:
        """One request, awaited on the caller's event loop."""
        return await asyncio.wrap_future(self.submit([request])[0])

    def _waiting(self, limit: int, linger_s: float = 0.0) -> list[tuple[Request, Future]]:
        """Up to ``limit`` waiting requests; when fewer wait, more are awaited up to ``linger_s`` seconds
        (a multi-step row's next request comes a moment after its answer: it should join the next call)."""
        deadline = time.monotonic() + linger_s
        while len(self._pending) < limit and not self._stopping:
            wait = deadline - time.monotonic()
            try:
                items = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if items is None:
                self._stopping = True
                break
            self._pending.extend(items)
        return [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]

    def _drive(self) -> None:
        """The backend's thread: one ``generate()`` call over whatever waits, again and again."""
        stream = getattr(self.teacher, "generate_stream", None)
        while not self._stopping or self._pending:
            if not self._pending:
                first = self._queue.get()
                if first is None:
                    break
                self._pending.extend(first)
            items = self._waiting(self.max_batch, self.linger_s)
            taken = {id(r): (r, f) for r, f in items}
            error = "the teacher returned no answer"
            try:
                if stream is not None:  # fast: requests that arrive meanwhile join the running call
                    stream(
                        [r for r, _ in items],
                        more=lambda n, taken=taken: [self._adopt(item, taken) for item in self._waiting(n)],
                        done=lambda request, c, taken=taken: taken[id(request)][1].set_result(c),
                    )
                else:
                    for (_, future), completion in zip(items, self.teacher.generate([r for r, _ in items])):
                        future.set_result(completion)
            except Exception as exc:  # the backend promises not to raise; if it does, its rows fail alone
                log.exception(
                    "teacher %s failed on %d requests", getattr(self.teacher, "name", "?"), len(taken)
                )
                error = repr(exc)
            for request, future in taken.values():  # no request may hang its batch
                if not future.done():
                    future.set_result(failed(request.id, error))

    @staticmethod
    def _adopt(item: tuple[Request, Future], taken: dict) -> Request:
        taken[id(item[0])] = item
        return item[0]

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
        close: Callable | None = getattr(self.teacher, "close", None)
        if close is not None:
            close()


def failed(request_id: str, error: str) -> Completion:
    return Completion(request_id, "", finish_reason=FINISH_ERROR, error=error[:500])
