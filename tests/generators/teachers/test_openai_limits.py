"""Adaptive concurrency of the openai teacher (generators/teachers/limits.py) against a server that caps
concurrency with 429 + Retry-After: every request answered once, none lost, the limit settles under the cap."""

from __future__ import annotations

import asyncio

from generators.teachers.contract import FINISH_STOP, Request
from generators.teachers.limits import AdaptiveLimit
from generators.teachers.openai import OpenAITeacher
from tests.helpers.capped_server import CappedServer


def test_slow_start_then_aimd_halves_once_per_round_and_grows_by_one_per_round():
    async def run():
        limit = AdaptiveLimit(64, start=2)
        first = [await limit.acquire() for _ in range(2)]
        for epoch in first:
            await limit.release(epoch)
        assert limit.limit == 4.0  # slow start: doubled by a round of answers
        limit.limit = 16.0
        epochs = [await limit.acquire() for _ in range(16)]
        for epoch in epochs[:4]:  # four throttled answers of one round: one cut
            await limit.release(epoch, throttled=True, retry_after=0.01)
        assert (limit.limit, limit.cuts) == (8.0, 1)
        assert limit.resume_at > 0
        for epoch in epochs[4:]:
            await limit.release(epoch, throttled=False)
        return limit

    limit = asyncio.run(run())
    assert 8.0 < limit.limit < 10.0  # twelve answers at a limit of about 8: one round and a half


def _run(adaptive: bool) -> tuple[list, dict, int]:
    requests = [Request(f"q{i:03d}", ({"role": "user", "content": f"question {i}"},)) for i in range(160)]
    with CappedServer(latency_s=0.1, cap=12, retry_after=0.1) as server:
        teacher = OpenAITeacher(server.url, "capped", api_key_env="", max_concurrency=256, max_retries=30,
                                adaptive_concurrency=adaptive, backoff_s=0.05, sampling={"temperature": 0.0})  # fmt: skip
        got = teacher.generate(requests)
        teacher.close()
    assert [c.id for c in got] == [r.id for r in requests]
    assert all(c.finish_reason == FINISH_STOP and c.text.startswith("answer to question") for c in got)
    assert all(server.attempts[r.id].count("ok") == 1 for r in requests)  # answered once each, none lost
    assert server.peak <= server.cap
    return got, server.attempts, sum(a.count("429") for a in server.attempts.values())


def test_hundreds_in_flight_back_off_under_the_servers_cap_and_nothing_is_lost_or_doubled():
    _, _, adaptive = _run(True)
    _, _, fixed = _run(False)  # 256 in flight whatever the server says
    assert adaptive < fixed / 2, (adaptive, fixed)
