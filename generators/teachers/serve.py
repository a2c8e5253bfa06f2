"""``litho serve``: an OpenAI-compatible HTTP server in front of any litho teacher.

``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` and ``GET /health``
(docs/generators.md#litho-serve lists the fields and the deliberate differences from OpenAI's API).
Concurrent requests are micro-batched: one worker thread owns the teacher, collects what arrives
within ``batch_wait_s`` (up to ``max_batch`` teacher requests) and answers it with one
``teacher.generate()`` call per distinct sampling setting. Requests that differ only in ``seed``
share a call, because each choice draws from its own counter (generators/teachers/serve_api.py):
the same request and seed give the same text whatever else is in the micro-batch. ``n`` choices,
``stream=True`` (server-sent events), ``usage``, ``response_format`` (``json_schema`` /
``json_object``, enforced while decoding by ``hf`` and ``fast``) and vLLM's ``structured_outputs``
are answered; bodies past ``max_body_bytes`` get a 413 and ``max_tokens`` past its limit a 400.

Starlette on uvicorn, not ``http.server``: the standard library's server is documented as not meant
for production (no limits of its own, a thread per connection), and streaming over it means writing
HTTP/1.1 chunked framing by hand. uvicorn parses HTTP with h11 (bounded headers, keep-alive
timeouts) and Starlette's ``StreamingResponse`` sends the events; handlers are coroutines waiting on
the worker's futures, so many open requests cost no threads.

    litho serve --model embedded:smollm2 --backend fast --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading

from generators.teachers.contract import Teacher
from generators.teachers.serve_api import Limits
from generators.teachers.serve_app import Batcher, build_app

log = logging.getLogger(__name__)


class TeacherServer:
    """Serve ``teacher`` over HTTP; ``port=0`` picks a free port (see :attr:`url`).

    Args:
        teacher: Any litho teacher (``HFTeacher``, ``FastTeacher``, ``DummyTeacher``, ...).
        host: Interface to bind; keep the loopback default unless the network is trusted.
        port: TCP port; 0 lets the OS choose.
        model_name: Name listed by ``/v1/models`` and sent in answers; defaults to ``teacher.name``.
        api_key: When set, requests must send ``Authorization: Bearer <api_key>``.
        max_batch: Most teacher requests answered by one ``generate()`` call.
        batch_wait_s: How long the worker waits for more requests before generating.
        limits: Request limits (:class:`generators.teachers.serve_api.Limits`).
    """

    def __init__(self, teacher: Teacher, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                 api_key: str | None = None, max_batch: int = 256, batch_wait_s: float = 0.01,
                 limits: Limits | None = None):  # fmt: skip
        import uvicorn

        self.teacher, self.model_name = teacher, model_name or teacher.name
        self.limits = limits or Limits()
        self.batcher = Batcher(teacher, max_batch, batch_wait_s)
        self.started = threading.Event()
        app = build_app(teacher, self.batcher, self.model_name, api_key, self.limits, self.started)
        # Bound here, so the port is known (and taken) before the server thread runs.
        self.socket = socket.create_server((host, port), family=_family(host))
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C: uvicorn finishes open requests first)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.batcher.close()

    def start(self, timeout_s: float = 30) -> TeacherServer:
        """Serve from a daemon thread and return once it answers (tests, notebooks)."""
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="teacher-http", daemon=True
        )
        self.thread.start()
        if not self.started.wait(timeout_s):
            raise RuntimeError(f"litho serve did not start within {timeout_s} s")
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.socket.close()
        self.batcher.close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="litho serve", description="Serve a litho teacher over an OpenAI-compatible API."
    )
    parser.add_argument(
        "--model", default="embedded:smollm2", help="model spec (see generators.teachers.models)"
    )
    parser.add_argument("--backend", choices=("hf", "fast"), default="fast")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32 keeps texts independent of the batch")
    parser.add_argument("--max-batch", type=int, default=256, help="teacher requests per generate() call")
    parser.add_argument("--api-key-env", default=None, help="require the key in this environment variable")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="when a request omits max_tokens")
    parser.add_argument("--max-tokens-limit", type=int, default=Limits.max_tokens, help="largest max_tokens")
    parser.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes, help="413 past this")
    parser.add_argument("--max-n", type=int, default=Limits.max_n, help="most choices per prompt")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "") if args.api_key_env else None
    if args.api_key_env and not api_key:
        sys.exit(f"litho serve: error: --api-key-env {args.api_key_env}: ${args.api_key_env} is not set; "
                 "export it, or drop the flag to serve without a key")  # fmt: skip
    limits = Limits(args.max_body_bytes, args.max_tokens_limit, args.max_n)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.backend == "fast":
        from generators.teachers.fast import FastTeacher as backend
    else:
        from generators.teachers.hf import HFTeacher as backend
    sampling = {"max_new_tokens": min(args.max_new_tokens, args.max_tokens_limit)}
    teacher = backend(args.model, device=args.device, dtype=args.dtype, sampling=sampling)
    server = TeacherServer(
        teacher, args.host, args.port, api_key=api_key, max_batch=args.max_batch, limits=limits
    )
    print(f"serving {teacher.name} ({args.backend}) at {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its graceful shutdown
        server.serve_forever()


if __name__ == "__main__":
    main()
