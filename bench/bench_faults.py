"""The fault table of docs/reliability.md: inject every fault, count rows lost, rows duplicated and
runs that needed a manual step.

    python bench/bench_faults.py                 # all faults; writes bench/results/faults.md
    python bench/bench_faults.py --only chaos    # the OpenAI-server faults alone (seconds)
    python bench/bench_faults.py --quick         # smoke run: 20 requests, one kill and its rerun; no write

Faults: an OpenAI-compatible server that answers 429 + Retry-After, 500, malformed JSON, truncated
bodies, resets and hangs (tests/helpers/chaos_server.py); ``kill -9`` of the whole run in each
phase (``LITHO_FAULT=PHASE:SECONDS``, pipeline/faults.py) followed by a plain rerun, compared byte
for byte with an uninterrupted run; a teacher actor killed mid-batch (``LITHO_FAULT=actor:N``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline.test_kill_rerun import digests, litho_run  # noqa: E402


def run(out: Path, fault: str | None = None, n: int = 48) -> int:
    """``litho generate`` in a process of its own; its exit code (a run without a fault must succeed)."""
    result = litho_run(out, fault or "", n)  # LITHO_FAULT="" injects nothing
    if fault is None:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.returncode


# (fault, LITHO_FAULT) for the kill matrix: moments inside each phase of the small run.
KILLS = [
    ("kill -9 while generating (after 1 of 6 batches)", "generate+1", None),
    ("kill -9 while generating (after 4 of 6 batches)", "generate+4", None),
    ("kill -9 while scoring and deduplicating", "process:1", None),
    ("kill -9 while writing shards", "write:0.5", None),
    ("kill -9 between the publishing renames", "commit", 40),
    ("kill -9 while writing the dedup index", "index", None),
    ("kill -9 while packing", "pack:0.3", None),
]


def chaos(n: int = 200) -> list[dict]:
    from generators.teachers.contract import FINISH_ERROR, Request
    from generators.teachers.openai import OpenAITeacher
    from tests.helpers.chaos_server import ChaosServer

    weights = {
        "ok": 0.4,
        "429": 0.1,
        "500": 0.1,
        "bad_json": 0.1,
        "truncated": 0.1,
        "reset": 0.1,
        "hang": 0.1,
    }
    requests = [Request(f"q{i:04d}", ({"role": "user", "content": f"question {i}"},)) for i in range(n)]
    with ChaosServer(weights, seed=11, retry_after=0.2, hang_s=6.0) as srv:
        teacher = OpenAITeacher(
            srv.url, "chaos", api_key_env="", max_concurrency=16, timeout_s=3.0, max_retries=5,
            backoff_s=0.05, backoff_max_s=1.0, sampling={"temperature": 0.0},
        )  # fmt: skip
        got = teacher.generate(requests)
        log = srv.log.attempts
    seen = Counter(a.outcome for attempts in log.values() for a in attempts)
    answered = sum(c.finish_reason != FINISH_ERROR for c in got)
    recorded = sum(c.finish_reason == FINISH_ERROR and bool(c.error) for c in got)
    resent = sum(
        any(a.outcome == "ok" for a in attempts[:-1]) for attempts in log.values()
    )  # asked again after an answer
    rows = []
    for kind in ("429", "500", "bad_json", "truncated", "reset", "hang"):
        rows.append(
            {"fault": f"server: {kind}", "injected": seen[kind], "lost": 0, "duplicated": 0, "manual": 0}
        )
    lost = n - answered - recorded
    rows.append(
        {
            "fault": f"server: all of the above, {n} requests ({answered} answered, {recorded} recorded as errors)",
            "injected": sum(seen[k] for k in seen if k != "ok"),
            "lost": lost,
            "duplicated": resent,
            "manual": 0,
        }
    )
    return rows


def kills(matrix: list[tuple] = KILLS, actor: bool = True) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(tmp / "reference")
        reference = digests(tmp / "reference")
        for i, (name, fault, first_n) in enumerate(matrix):
            out = tmp / f"run{i}"
            if first_n:
                run(out, n=first_n)
            code = run(out, fault)
            before = digests(out)
            run(out)
            after = digests(out)
            same = after == reference
            rows.append(
                {
                    "fault": name + ("" if code == -9 else f" (not killed: exit {code})"),
                    "injected": int(code == -9),
                    "lost": 0 if same else len(set(reference) - set(after)),
                    "duplicated": 0 if same else len(set(after) - set(reference)),
                    "manual": 0 if same else 1,
                    "note": f"{len(before)} published files left by the killed run; rerun byte-identical: {same}",
                }
            )
        if not actor:
            return rows
        out = tmp / "actor"
        code = run(out, "actor:2")
        fired = bool(list((out / ".litho").rglob(".litho-fault-fired")))
        same = code == 0 and digests(out) == reference
        rows.append(
            {
                "fault": "teacher actor killed mid-batch (SIGKILL of its process)",
                "injected": int(fired),
                "lost": 0 if same else 1,
                "duplicated": 0,
                "manual": 0 if same else 1,
                "note": f"run exit {code}; byte-identical to the uninterrupted run: {same}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["chaos", "kills"])
    parser.add_argument("--write", action="store_true", help="write bench/results/faults.md")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 20 requests, the first kill only, no write",
    )
    args = parser.parse_args()
    started, load = time.perf_counter(), os.getloadavg()
    requests, matrix, actor = (20, KILLS[:1], False) if args.quick else (200, KILLS, True)
    rows = (chaos(requests) if args.only != "kills" else []) + (
        kills(matrix, actor) if args.only != "chaos" else []
    )
    lines = [
        "| fault | injected | rows lost | rows duplicated | runs needing a manual step | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fault']} | {r['injected']} | {r['lost']} | {r['duplicated']} | {r['manual']} | {r.get('note', '')} |"
        )
    text = "\n".join(lines)
    footer = (
        f"\n\n`python bench/bench_faults.py{' --only ' + args.only if args.only else ''}{' --quick' if args.quick else ' --write'}`, "
        f"{time.perf_counter() - started:.0f} s, load {load[0]:.1f} at start.\n"
    )
    print(text + footer)
    if args.write and not args.quick:
        path = ROOT / "bench" / "results" / "faults.md"
        path.write_text("# Faults injected (bench/bench_faults.py)\n\n" + text + footer)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
