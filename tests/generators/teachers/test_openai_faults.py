"""OpenAITeacher under a misbehaving server: every request is answered or recorded with its error,
retries wait as told, and nothing is asked again once it was answered."""

from __future__ import annotations

from collections import Counter

from generators.teachers.contract import FINISH_ERROR, FINISH_STOP, Request
from generators.teachers.openai import OpenAITeacher
from tests.helpers.chaos_server import ChaosServer, answer_text

WEIGHTS = {"ok": 0.4, "429": 0.1, "500": 0.1, "bad_json": 0.1, "truncated": 0.1, "reset": 0.1, "hang": 0.1}
BACKOFF, RETRY_AFTER, TIMEOUT = 0.05, 0.2, 0.4


def _requests(n: int) -> list[Request]:
    return [Request(f"q{i:03d}", ({"role": "user", "content": f"question number {i}"},)) for i in range(n)]


def test_every_request_is_answered_or_recorded_and_never_asked_twice_after_an_answer():
    requests = _requests(48)
    with ChaosServer(WEIGHTS, seed=3, retry_after=RETRY_AFTER, hang_s=TIMEOUT * 2) as srv:
        teacher = OpenAITeacher(
            srv.url,
            "chaos",
            api_key_env="",
            max_concurrency=8,
            timeout_s=TIMEOUT,
            max_retries=5,
            backoff_s=BACKOFF,
            backoff_max_s=1.0,
            sampling={"temperature": 0.0},
        )
        got = teacher.generate(requests)
        log = srv.log.attempts
    assert [c.id for c in got] == [r.id for r in requests]
    seen = Counter(a.outcome for attempts in log.values() for a in attempts)
    assert set(seen) == set(WEIGHTS)  # every kind of fault happened
    for request, completion in zip(requests, got):
        attempts = log[request.id]
        answered = [a for a in attempts if a.outcome == "ok"]
        # An answer ends the request: it is the last attempt, and there is at most one.
        assert len(answered) <= 1 and (not answered or attempts[-1].outcome == "ok")
        if answered:
            assert completion.finish_reason == FINISH_STOP
            assert completion.text == answer_text({"messages": list(request.messages)})
        else:
            assert completion.finish_reason == FINISH_ERROR and "6 attempts" in completion.error
            assert len(attempts) == 6
        for k, (before, after) in enumerate(zip(attempts, attempts[1:])):
            wait = after.at - before.at
            if before.outcome == "429":  # the server's Retry-After wins
                assert wait >= RETRY_AFTER - 0.02, (request.id, k, wait)
            elif before.outcome in ("500", "bad_json", "truncated", "reset"):
                assert wait >= BACKOFF * 2**k - 0.02, (request.id, k, wait)
            else:  # a hang: the client waited out its own timeout first
                assert wait >= TIMEOUT - 0.02, (request.id, k, wait)
    assert sum(c.finish_reason == FINISH_STOP for c in got) >= 40
