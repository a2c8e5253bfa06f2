"""An OpenAI-compatible loopback server that misbehaves on purpose, for fault-injection tests.

Every attempt of every request draws one outcome from a seeded generator keyed by (request id,
attempt number), so a run is repeatable: a good answer, 429 with ``Retry-After``, 500, malformed
JSON, a truncated body, a reset connection, or no answer at all (the connection is held, then
closed without a response). The server logs each attempt (arrival time, outcome) by the
``X-Request-Id`` header the client sends, so a test can check retries, delays and that nothing
is asked again once it was answered.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import xxhash

OUTCOMES = ("ok", "429", "500", "bad_json", "truncated", "reset", "hang")


@dataclass
class Attempt:
    at: float
    outcome: str


@dataclass
class ChaosLog:
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rid: str, outcome: str) -> None:
        with self.lock:
            self.attempts.setdefault(rid, []).append(Attempt(time.monotonic(), outcome))


class ChaosServer(ThreadingHTTPServer):
    """Args:
    weights: Relative frequency of each outcome in :data:`OUTCOMES`.
    seed: Seed of the outcome draws.
    retry_after: Seconds sent in ``Retry-After`` with every 429.
    hang_s: How long a "hang" holds the connection before closing it unanswered.
    """

    daemon_threads = True

    def __init__(
        self, weights: dict[str, float], seed: int = 0, retry_after: float = 0.2, hang_s: float = 1.0
    ):
        super().__init__(("127.0.0.1", 0), _Handler)
        total = sum(weights.get(o, 0.0) for o in OUTCOMES)
        self.cumulative, acc = [], 0.0
        for outcome in OUTCOMES:
            acc += weights.get(outcome, 0.0) / total
            self.cumulative.append((acc, outcome))
        self.seed, self.retry_after, self.hang_s = seed, retry_after, hang_s
        self.log = ChaosLog()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def outcome(self, rid: str, attempt: int) -> str:
        u = xxhash.xxh64_intdigest(f"{rid}:{attempt}".encode(), seed=self.seed) / 2**64
        return next(o for edge, o in self.cumulative if u < edge or edge == self.cumulative[-1][0])

    def __enter__(self) -> ChaosServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


def answer_text(body: dict) -> str:
    """The text a good answer carries: a function of the request, so a test can check it."""
    return "echo: " + str(body["messages"][-1]["content"])[:60]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        srv: ChaosServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rid = self.headers.get("X-Request-Id", "?")
        with srv.log.lock:
            attempt = len(srv.log.attempts.get(rid, []))
        outcome = srv.outcome(rid, attempt)
        srv.log.add(rid, outcome)
        if outcome == "reset":  # RST instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if outcome == "hang":
            time.sleep(srv.hang_s)
            self.close_connection = True
            return
        status, headers = 200, {}
        payload = json.dumps(
            {
                "choices": [{"message": {"content": answer_text(body)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            }
        ).encode()
        if outcome == "429":
            status, headers = 429, {"Retry-After": str(srv.retry_after)}
            payload = b'{"error": {"message": "slow down"}}'
        elif outcome == "500":
            status, payload = 500, b'{"error": {"message": "internal"}}'
        elif outcome == "bad_json":
            payload = b'{"choices": [ {"message": '
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        length = len(payload) + (200 if outcome == "truncated" else 0)
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if outcome == "truncated" else payload)
        if outcome == "truncated":
            self.wfile.flush()
            self.close_connection = True
