"""teacher=openai against a rate-limited loopback server: rows/s against concurrency, adaptive vs fixed.

The server (tests/helpers/capped_server.py) answers each request after a fixed latency and serves at
most ``--cap`` requests at once: the rest get 429 with ``Retry-After``, as a rate-limited API does.
For each ``max_concurrency`` the same requests go through litho's ``OpenAITeacher.generate`` twice,
with adaptive concurrency (slow start, AIMD on 429, Retry-After: generators/teachers/limits.py) and
with a fixed limit; the table gives rows/s, throttled attempts, the limit it ended at, the most
requests the server served at once, and rows lost (no answer) or duplicated (answered twice).
The baseline in the same run: the server's own ceiling, ``cap / latency`` rows/s.

    python bench/bench_openai.py --write      # 512 requests, 200 ms, cap 32; writes bench/results/openai.md
    python bench/bench_openai.py --quick      # smoke run (tests/bench/test_bench_scripts.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "openai.md"


def one(n: int, concurrency: int, adaptive: bool, latency: float, cap: int) -> dict:
    from generators.teachers.contract import FINISH_STOP, Request
    from generators.teachers.openai import OpenAITeacher
    from tests.helpers.capped_server import CappedServer

    requests = [Request(f"b{i:05d}", ({"role": "user", "content": f"question {i}"},)) for i in range(n)]
    with CappedServer(latency_s=latency, cap=cap, retry_after=latency) as server:
        teacher = OpenAITeacher(server.url, "capped", api_key_env="", max_concurrency=concurrency,
                                adaptive_concurrency=adaptive, max_retries=50, backoff_s=latency,
                                sampling={"temperature": 0.0})  # fmt: skip
        started = time.perf_counter()
        got = teacher.generate(requests)
        seconds = time.perf_counter() - started
        teacher.close()
        answered = {r.id: server.attempts[r.id].count("ok") for r in requests}
        return {
            "concurrency": concurrency,
            "adaptive": adaptive,
            "rows_s": n / seconds,
            "seconds": seconds,
            "throttled": sum(a.count("429") for a in server.attempts.values()),
            "limit": teacher.limit.limit,
            "peak": server.peak,
            "lost": sum(c.finish_reason != FINISH_STOP for c in got) + sum(v == 0 for v in answered.values()),
            "duplicated": sum(v > 1 for v in answered.values()),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument("--cap", type=int, default=32, help="most requests the server serves at once")
    parser.add_argument("--concurrency", default="8,32,64,256", help="max_concurrency values, comma list")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): 24 requests, 20 ms, cap 4"
    )
    parser.add_argument("--write", action="store_true", help=f"append to {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.latency, args.cap, args.concurrency, args.write = 24, 0.02, 4, "2,16", False
    before = os.getloadavg()
    rows = [
        one(args.requests, int(c), adaptive, args.latency, args.cap)
        for c in args.concurrency.split(",")
        for adaptive in (True, False)
    ]
    cpu = cpu_model()
    ceiling = args.cap / args.latency
    lines = [
        "| max_concurrency | adaptive | rows/s | / server ceiling | throttled (429) | final limit | "
        "server peak | lost | duplicated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {'yes' if r['adaptive'] else 'no'} | {r['rows_s']:.1f} | "
            f"{r['rows_s'] / ceiling:.2f} | {r['throttled']} | {r['limit']:.1f} | {r['peak']} | {r['lost']} | "
            f"{r['duplicated']} |"
        )
    header = (
        f"`python bench/bench_openai.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d %H:%M')}, {cpu}, "
        f"load {before[0]:.1f} -> {os.getloadavg()[0]:.1f}; {args.requests} requests, server latency "
        f"{args.latency * 1000:.0f} ms, cap {args.cap} (ceiling {ceiling:.0f} rows/s)"
    )
    block = header + "\n\n" + "\n".join(lines) + "\n"
    print(block)
    if args.write:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# teacher=openai against a rate-limited loopback server (bench/bench_openai.py)\n"
            )
        with RESULTS.open("a") as f:
            f.write("\n" + block)
    return 1 if any(r["lost"] or r["duplicated"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
