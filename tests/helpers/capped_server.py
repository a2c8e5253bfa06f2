"""An OpenAI-compatible loopback server with a fixed latency and a concurrency cap, as a rate-limited API
behaves: a request beyond ``cap`` in flight gets 429 with ``Retry-After`` at once; the others are answered
after ``latency_s``. It logs every attempt by ``X-Request-Id`` and the most requests it served at once,
for tests/generators/teachers/test_openai_limits.py and bench/bench_openai.py."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CappedServer(ThreadingHTTPServer):
    """Args:
    latency_s: Seconds before each answer.
    cap: Most requests served at once; more get 429.
    retry_after: Seconds sent in ``Retry-After`` with a 429.
    """

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, latency_s: float = 0.2, cap: int = 32, retry_after: float = 0.2):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s, self.cap, self.retry_after = latency_s, cap, retry_after
        self.lock = threading.Lock()
        self.serving = self.peak = 0
        self.attempts: dict[str, list[str]] = defaultdict(list)  # request id -> outcomes ("ok", "429")
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> CappedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        srv: CappedServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rid = self.headers.get("X-Request-Id", "?")
        with srv.lock:
            admitted = srv.serving < srv.cap
            srv.serving += admitted
            srv.peak = max(srv.peak, srv.serving)
            srv.attempts[rid].append("ok" if admitted else "429")
        if not admitted:
            self._send(
                429, b'{"error": {"message": "too many requests"}}', {"Retry-After": str(srv.retry_after)}
            )
            return
        try:
            time.sleep(srv.latency_s)
            text = "answer to " + str(body["messages"][-1]["content"])[:40]
            usage = {"prompt_tokens": 5, "completion_tokens": len(text.split())}
            payload = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": usage}
            self._send(200, json.dumps(payload).encode())
        finally:
            with srv.lock:
                srv.serving -= 1
