"""Streaming a teacher (generators/teachers/stream.py): requests of several batches share one backend, texts
are those of one plain ``generate()`` call (fp32: a text depends on its request only), and tokens are
counted as they are decoded."""

from __future__ import annotations

import pytest

from generators.teachers.contract import Completion, Request
from generators.teachers.fast import FastTeacher
from generators.teachers.hf import HFTeacher
from generators.teachers.stream import Streamer

SAMPLED = dict(max_new_tokens=16, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=3)


def ask(i: int) -> Request:
    return Request(f"s{i}", ({"role": "user", "content": f"Question {i}: " + "why " * (i % 5)},))


def test_fast_keeps_its_slots_fed_with_later_batches_and_texts_do_not_change(model_dir):
    teacher = FastTeacher(model_dir, device="cpu", dtype="float32", sampling=SAMPLED, max_batch=4,
                          prompt_bucket=8, sync_every=4)  # fmt: skip
    plain = teacher.generate([ask(i) for i in range(10)])
    fed, calls = [], []
    engine = teacher.engine.generate
    teacher.engine.generate = lambda *a, **k: calls.append(len(a[0])) or engine(*a, **k)
    stream = Streamer(teacher, max_batch=4, linger_s=0.0)
    later = [ask(i) for i in range(4, 10)]

    def more(n):  # the rows of the next batches, handed over only once the first call runs
        taken, later[:] = later[:n], later[n:]
        fed.extend(taken)
        return taken

    got = {}
    teacher.generate_stream([ask(i) for i in range(4)], more, lambda r, c: got.__setitem__(r.id, c))
    assert len(calls) == 1 and len(fed) == 6  # one engine call answered all ten
    assert [got[c.id].text for c in plain] == [c.text for c in plain]
    assert stream.meter.tokens == sum(c.completion_tokens for c in plain)  # counted as decoded
    stream.meter.tokens = 0
    futures = stream.submit([ask(i) for i in range(10)])
    assert [f.result(timeout=60).text for f in futures] == [c.text for c in plain]
    assert stream.meter.tokens == sum(c.completion_tokens for c in plain) > 0
    stream.close()


def test_hf_counts_tokens_per_decode_step(model_dir):
    teacher = HFTeacher(model_dir, device="cpu", dtype="float32", batch_size=8, sampling=SAMPLED)
    stream = Streamer(teacher)
    seen = []
    add = stream.meter.add
    stream.meter.add = lambda n: seen.append(n) or add(n)
    futures = stream.submit([ask(i) for i in range(6)])
    done = [f.result(timeout=60) for f in futures]
    assert len(seen) >= SAMPLED["max_new_tokens"] - 1  # one count per step, not one per answer
    assert stream.meter.tokens == sum(c.completion_tokens for c in done) > 0
    stream.close()


@pytest.mark.parametrize("size", [1, 3])
def test_a_backend_that_raises_fails_only_its_rows(size):
    class Broken:
        name, batch_size = "broken", size

        def generate(self, requests):
            if any(r.id == "s1" for r in requests):
                raise RuntimeError("boom")
            return [Completion(r.id, "ok") for r in requests]

    stream = Streamer(Broken(), linger_s=0.0)
    got = [f.result(timeout=10) for f in stream.submit([ask(i) for i in range(4)])]
    assert [c.finish_reason for c in got][1] == "error" and "boom" in got[1].error
    assert sum(c.text == "ok" for c in got) == (3 if size == 1 else 1)
    stream.close()
