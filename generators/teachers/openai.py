"""Teacher backend for any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, litho's own serve).

asyncio and ``httpx.AsyncClient`` on an event loop of the teacher's own (peers such as Bespoke
curator and distilabel keep hundreds of requests in flight per process the same way): every request
is a coroutine, submitted as soon as the teacher stage has it (:meth:`OpenAITeacher.submit`), and at
most ``max_concurrency`` are in flight, a limit that adapts to the server (:mod:`generators.teachers.limits`:
halved on 429/503, honouring ``Retry-After``, grown back by one per round of answers). Every request
is independent: 429 and 5xx answers, timeouts, dropped or reset connections, truncated bodies and
answers that are not JSON are retried with exponential backoff (the server's ``Retry-After`` wins
when it sends one); whatever still fails becomes that row's ``Completion(finish_reason="error")``
and the run goes on. Each request carries its litho id as ``X-Request-Id`` (vLLM and most gateways
log it, and some use it to recognise a retry of a request they already run); a request is never
sent again once an answer arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future

import xxhash

from generators.errors import ConfigError
from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
    cut_at_stop,
)
from generators.teachers.limits import AdaptiveLimit
from generators.teachers.stream import LoopThread
from generators.teachers.structure import Structure, check

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
THROTTLE_STATUS = frozenset({429, 503})  # the server asks for fewer requests: the limit is cut
ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions"}
MAX_STOP = 4  # the OpenAI API takes at most four stop strings; the rest are cut here
# How a request's structure (generators/teachers/structure.py) is sent: OpenAI's response_format
# (JSON schemas only), vLLM's structured_outputs (JSON schema or regex), or not at all.
GUIDED = ("response_format", "structured_outputs", "none")


class RequestFailed(RuntimeError):
    """A request that cannot succeed (a 4xx other than 408/409/429, or a malformed answer)."""


class OpenAITeacher:
    """Chat generation through an OpenAI-compatible HTTP API.

    Args:
        base_url: Server root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        model: Model name the server knows (its ``GET /v1/models`` lists them).
        name: Name recorded in the output; defaults to ``model``.
        api_key_env: Environment variable holding the API key; unset or empty sends no key.
        endpoint: ``chat`` (server applies the chat template) or ``completions`` (raw prompt,
            built from the messages by :func:`render_plain`).
        max_concurrency: Most requests in flight at once from this teacher (per actor); the limit
            adapts below it when the server throttles (429/503).
        adaptive_concurrency: Adapt the limit (AIMD); off, ``max_concurrency`` requests stay in flight.
        timeout_s: Socket timeout per attempt (connect, and each read).
        max_retries: Retries after the first attempt on 429 / 5xx / timeouts / connection errors.
        backoff_s: First retry delay; doubles per retry (with up to 25% deterministic jitter).
        backoff_max_s: Cap on one retry delay, ``Retry-After`` included.
        extra_body: Extra JSON fields sent with every request (server-specific options).
        guided: How a request's structure is sent: ``response_format`` (OpenAI's ``json_schema``;
            a regex is then only checked), ``structured_outputs`` (vLLM >= 0.12: JSON schema or
            regex) or ``none`` (only checked). Every answer is validated either way.
        structure_retries: Times a request whose answer fails its structure is asked again, with
            another seed; what still fails is returned with :attr:`Completion.invalid` set.
        sampling: Keyword arguments of :class:`SamplingParams`. ``top_k`` and
            ``repetition_penalty`` are sent only when set (not all servers accept them).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        name: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        endpoint: str = "chat",
        max_concurrency: int = 256,
        adaptive_concurrency: bool = True,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        extra_body: dict | None = None,
        guided: str = "response_format",
        structure_retries: int = 2,
        sampling: dict | None = None,
    ):
        check_guided(guided, structure_retries)
        self.guided, self.structure_retries = guided, structure_retries
        if endpoint not in ENDPOINTS:
            raise ConfigError(f"teacher.endpoint={endpoint}: use one of {sorted(ENDPOINTS)}")
        if not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(f"teacher.base_url={base_url}: give an http(s) URL ending in /v1")
        self.url = str(base_url).rstrip("/") + ENDPOINTS[endpoint]
        self.model, self.name, self.endpoint = model, name or model, endpoint
        self.sampling = SamplingParams.from_config(sampling)
        self.max_concurrency, self.timeout_s, self.max_retries = (
            max(1, max_concurrency),
            timeout_s,
            max_retries,
        )
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.extra_body = dict(extra_body or {})
        floor = 1 if adaptive_concurrency else self.max_concurrency
        self.limit = AdaptiveLimit(self.max_concurrency, minimum=floor)
        self._loop: LoopThread | None = None
        self._client = None
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        elif api_key_env:
            log.info(
                "teacher %s: $%s is not set; sending requests without an API key", self.name, api_key_env
            )

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return [future.result() for future in [self.submit(r) for r in requests]]

    def submit(self, request: Request) -> Future:
        """The request's completion, as a future; it runs on the teacher's event loop at once."""
        if self._loop is None:
            self._loop = LoopThread(f"litho-openai-{self.name}")
        return self._loop.run(self._complete(request))

    async def _complete(self, request: Request) -> Completion:
        try:
            for attempt in range(self.structure_retries + 1 if request.structure else 1):
                answer = await self._post(self._payload(request, attempt), request.id)
                completion = self._parse(request, answer)
                completion.invalid = check(request.structure, completion.text)
                if completion.invalid is None:
                    break
                log.info(
                    "teacher %s: %s: answer %d fails its structure: %s",
                    self.name,
                    request.id,
                    attempt + 1,
                    completion.invalid,
                )
            if attempt:
                completion.extra["structure_attempts"] = attempt + 1
            return completion
        except Exception as exc:  # one failed request must not kill the run
            log.warning("teacher %s: request %s failed: %s", self.name, request.id, exc)
            return Completion(request.id, "", finish_reason=FINISH_ERROR, error=str(exc)[:500])

    def close(self) -> None:
        """Close the HTTP client and stop the teacher's event loop."""
        if self._loop is not None:
            if self._client is not None:
                self._loop.run(self._client.aclose()).result(timeout=10)
            self._loop.close()
            self._loop = self._client = None

    def _payload(self, request: Request, attempt: int = 0) -> dict:
        sp = self.sampling
        key = request.id if attempt == 0 else f"{request.id}#{attempt}"  # a retry draws anew
        body = {
            "model": self.model,
            "max_tokens": sp.max_new_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            # A per-request seed: the same config gives the same draws whatever the batching.
            "seed": xxhash.xxh64_intdigest(key.encode(), seed=sp.seed) % (2**31),
        }
        body.update(guided_fields(request.structure, self.guided))
        if sp.top_k:
            body["top_k"] = sp.top_k
        if sp.repetition_penalty != 1.0:
            body["repetition_penalty"] = sp.repetition_penalty
        if sp.stop:
            body["stop"] = list(sp.stop[:MAX_STOP])
        if self.endpoint == "chat":
            body["messages"] = [dict(m) for m in request.messages]
        else:
            body["prompt"] = render_plain(request.messages)
        return {**body, **self.extra_body}

    def _http(self):
        import httpx

        if self._client is None:  # made on the teacher's loop, where it is used
            limits = httpx.Limits(
                max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
            )
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits)
        return self._client

    async def _post(self, payload: dict, request_id: str) -> dict:
        import httpx

        data = json.dumps(payload).encode()
        headers = {**self._headers, "X-Request-Id": request_id}
        for attempt in range(self.max_retries + 1):
            retry_after, throttled = None, False
            epoch = await self.limit.acquire()
            try:
                response = await self._http().post(self.url, content=data, headers=headers)
                if response.status_code >= 400:
                    detail = _error_text(response)
                    if response.status_code not in RETRY_STATUS:
                        raise RequestFailed(f"HTTP {response.status_code}: {detail}")
                    problem = f"HTTP {response.status_code}: {detail}"
                    retry_after = response.headers.get("Retry-After")
                    throttled = response.status_code in THROTTLE_STATUS
                else:
                    try:
                        answer = json.loads(response.content)
                        await self.limit.release(epoch)
                        epoch = None
                        return answer
                    except ValueError as exc:  # a proxy's error page or a cut-off body: worth another try
                        problem = f"answer is not JSON ({exc})"
            except httpx.TransportError as exc:  # timeouts, resets, truncated bodies, refused connections
                timed_out = isinstance(exc, httpx.TimeoutException)
                problem = f"{type(exc).__name__}: {'timed out' if timed_out else ''} {exc}".replace(
                    "  ", " "
                ).strip()
            finally:
                if epoch is not None:
                    delay = _seconds(retry_after)
                    await self.limit.release(epoch, throttled, min(delay, self.backoff_max_s) if delay else None,
                                             answered=False)  # fmt: skip
            if attempt == self.max_retries:
                raise RequestFailed(f"{problem} (after {attempt + 1} attempts)")
            await asyncio.sleep(self._delay(attempt, retry_after, request_id))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None, request_id: str) -> float:
        if (seconds := _seconds(retry_after)) is not None:
            return min(self.backoff_max_s, seconds)
        jitter = 1 + 0.25 * xxhash.xxh64_intdigest(f"{request_id}:{attempt}".encode()) / 2**64
        return min(self.backoff_max_s, self.backoff_s * 2**attempt * jitter)

    def _parse(self, request: Request, answer: dict) -> Completion:
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise RequestFailed(f"unexpected answer: {json.dumps(answer)[:300]}") from None
        text, stopped = cut_at_stop(text or "", self.sampling.stop)
        reason = choice.get("finish_reason")
        finish = FINISH_LENGTH if reason == "length" and not stopped else FINISH_STOP
        usage = answer.get("usage") or {}
        extra = {"finish_reason": reason} if reason not in ("stop", "length", None) else {}
        return Completion(
            request.id,
            text.strip(),
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            finish,
            extra=extra,
        )


def check_guided(guided, structure_retries) -> None:
    """``teacher.guided`` and ``teacher.structure_retries`` (the driver checks them before Ray starts).

    Raises:
        ConfigError: an unknown mode or a negative retry count.
    """
    if guided not in GUIDED:
        raise ConfigError(f"teacher.guided={guided}: use one of {list(GUIDED)}")
    if not isinstance(structure_retries, int) or isinstance(structure_retries, bool) or structure_retries < 0:
        raise ConfigError(f"teacher.structure_retries={structure_retries}: give an integer >= 0")


def guided_fields(structure: Structure | None, guided: str) -> dict:
    """The request fields that ask the server to enforce ``structure`` (see ``GUIDED``)."""
    if structure is None or guided == "none":
        return {}
    if guided == "structured_outputs":
        kind = {"json": structure.schema} if structure.json_schema else {"regex": structure.regex}
        return {"structured_outputs": kind}
    if structure.json_schema is None:
        return {}  # response_format has no regex: the answer is only checked
    spec = {"name": "litho", "schema": structure.schema, "strict": True}
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


def render_plain(messages: Sequence[dict]) -> str:
    """Messages as a plain-text prompt for ``/v1/completions``: a lone user message is sent as is."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content", ""))
    turns = [f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in messages]
    return "\n\n".join(turns + ["Assistant:"])


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` in seconds (None when absent, or an HTTP date: then litho's own schedule)."""
    try:
        return max(0.0, float(retry_after)) if retry_after is not None else None
    except ValueError:
        return None


def _error_text(response) -> str:
    try:
        message = response.json().get("error", {})
        return str(message.get("message", message) if isinstance(message, dict) else message)[:300]
    except Exception:
        return (response.text or response.reason_phrase)[:300]
