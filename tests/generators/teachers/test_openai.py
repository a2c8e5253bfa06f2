"""OpenAITeacher against real HTTP servers on loopback: litho's own serve, and scripted failures."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generators.teachers.contract import FINISH_ERROR, FINISH_STOP, Request
from generators.teachers.fast import FastTeacher
from generators.teachers.hf import HFTeacher
from generators.teachers.openai import OpenAITeacher
from generators.teachers.serve import TeacherServer

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = dict(max_new_tokens=12, temperature=0.0)
QUESTIONS = ["Hi", "Tell me a story about a cat.", "Numbers?", "Rain and rivers", "The quick brown fox"]
REQUESTS = [Request(f"r{i}", ({"role": "user", "content": q},)) for i, q in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def local(model_dir):
    """The reference: the same teacher called in-process, one prompt per generate() batch."""
    return HFTeacher(model_dir, device="cpu", batch_size=1, sampling=GREEDY)


@pytest.fixture(scope="module")
def server(model_dir):
    teacher = HFTeacher(model_dir, name="tiny", device="cpu", batch_size=1, sampling=GREEDY)
    with TeacherServer(teacher, api_key=None) as srv:
        yield srv


def client(url: str, **kw) -> OpenAITeacher:
    return OpenAITeacher(url, "tiny", api_key_env="", sampling=GREEDY, **kw)


def test_chat_and_completions_endpoints_answer_like_the_local_teacher(server, local):
    want = [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in local.generate(REQUESTS)]
    for endpoint in ("chat", "completions"):
        got = client(server.url, endpoint=endpoint, max_concurrency=3).generate(REQUESTS)
        assert [c.id for c in got] == [r.id for r in REQUESTS]
        assert [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in got] == want
    assert any(text for text, *_ in want)


def test_models_endpoint_lists_the_teacher(server):
    with urllib.request.urlopen(server.url + "/models", timeout=5) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["tiny"]


def test_bad_request_fails_only_its_row(server):
    broken = Request("bad", ({"role": "user"},))  # no content: the server answers 400
    got = client(server.url).generate([REQUESTS[0], broken, REQUESTS[2]])
    assert got[1].finish_reason == FINISH_ERROR and "HTTP 400" in got[1].error and "messages" in got[1].error
    assert got[0].finish_reason != FINISH_ERROR and got[2].finish_reason != FINISH_ERROR


def test_api_key_from_environment(model_dir, monkeypatch):
    teacher = HFTeacher(model_dir, name="tiny", device="cpu", sampling=dict(GREEDY, max_new_tokens=3))
    with TeacherServer(teacher, api_key="sekret") as srv:
        monkeypatch.setenv("LITHO_TEST_KEY", "sekret")
        ok = OpenAITeacher(srv.url, "tiny", api_key_env="LITHO_TEST_KEY", sampling=GREEDY).generate(
            REQUESTS[:1]
        )
        monkeypatch.setenv("LITHO_TEST_KEY", "wrong")
        denied = OpenAITeacher(srv.url, "tiny", api_key_env="LITHO_TEST_KEY", sampling=GREEDY).generate(
            REQUESTS[:1]
        )
    assert ok[0].finish_reason != FINISH_ERROR
    assert denied[0].finish_reason == FINISH_ERROR and "HTTP 401" in denied[0].error


def test_server_micro_batches_concurrent_requests_for_the_fast_teacher(model_dir):
    teacher = FastTeacher(model_dir, name="tiny", device="cpu", sampling=GREEDY, max_batch=8)
    want = [c.text for c in teacher.generate(REQUESTS)]
    sizes = []
    generate = teacher.generate
    teacher.generate = lambda requests: sizes.append(len(requests)) or generate(requests)
    with TeacherServer(teacher, batch_wait_s=0.3) as srv:
        got = client(srv.url, max_concurrency=5).generate(REQUESTS)
    assert [c.text for c in got] == want
    assert max(sizes) > 1 and sum(sizes) == len(REQUESTS)


class Scripted(ThreadingHTTPServer):
    """A loopback server that answers POSTs from a script of (status, delay_s), then 200s."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, float]]):
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script, self.hits, self.inflight, self.peak = list(script), 0, 0, 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv: Scripted = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.hits += 1
            srv.inflight += 1
            srv.peak = max(srv.peak, srv.inflight)
            status, delay = srv.script.pop(0) if srv.script else (200, 0.05)
        time.sleep(delay)
        with srv.lock:
            srv.inflight -= 1
        text = f"echo {body['messages'][-1]['content']} STOP tail"
        payload = {
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 4},
        }
        if status != 200:
            payload = {"error": {"message": f"scripted {status}"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)


def test_retries_429_and_5xx_with_backoff_then_succeeds():
    with Scripted([(429, 0), (429, 0), (503, 0)]) as srv:
        start = time.monotonic()
        got = client(srv.url, backoff_s=0.05, max_retries=4).generate(REQUESTS[:1])
        elapsed = time.monotonic() - start
    assert (
        got[0].finish_reason == FINISH_STOP and got[0].text == "echo Hi STOP tail"
    )  # no stop strings configured
    assert srv.hits == 4
    assert elapsed >= 0.2  # two Retry-After: 0 retries, then a 4x backoff_s wait after the 503


def test_stop_strings_are_sent_and_applied():
    with Scripted([]) as srv:
        teacher = OpenAITeacher(srv.url, "m", api_key_env="", sampling=dict(GREEDY, stop=["STOP"]))
        got = teacher.generate(REQUESTS[:1])
    assert got[0].text == "echo Hi" and got[0].finish_reason == FINISH_STOP


def test_exhausted_retries_and_timeouts_are_recorded_per_row():
    with Scripted([(503, 0)] * 3) as srv:
        failed = client(srv.url, backoff_s=0.01, max_retries=2).generate(REQUESTS[:1])
        assert srv.hits == 3
    assert (
        failed[0].finish_reason == FINISH_ERROR
        and "HTTP 503" in failed[0].error
        and "3 attempts" in failed[0].error
    )
    with Scripted([(200, 1.5), (200, 1.5)]) as srv:
        start = time.monotonic()
        slow = client(srv.url, timeout_s=0.2, backoff_s=0.01, max_retries=1).generate(REQUESTS[:1])
        assert time.monotonic() - start < 1.2
    assert slow[0].finish_reason == FINISH_ERROR and "timed out" in slow[0].error


def test_concurrency_is_bounded():
    with Scripted([(200, 0.1)] * 12) as srv:
        got = client(srv.url, max_concurrency=3).generate(
            [Request(f"c{i}", REQUESTS[0].messages) for i in range(12)]
        )
    assert all(c.finish_reason == FINISH_STOP for c in got)
    assert 2 <= srv.peak <= 3


def test_unreachable_server_is_an_error_not_a_crash():
    with Scripted([]) as srv:
        url = srv.url
    got = client(url, max_retries=1, backoff_s=0.01, timeout_s=1).generate(REQUESTS[:2])
    assert [c.finish_reason for c in got] == [FINISH_ERROR, FINISH_ERROR]
    assert "2 attempts" in got[0].error
