"""Report benchmark: `litho report` on a 100k-row output must take <= 30 s and write <= 5 MB.

    flock /tmp/litho-bench.lock .venv/bin/python bench/bench_report.py [--rows 100000] [--quick] [--write]

The output is made once with the dummy teacher and no LM scorer (`filters.lm=null`; drops by
teacher error, truncation, a threshold, a quantile band and exact dedup, so every section has data)
and kept in --out for reruns. Each repeat runs `litho report OUT` in a fresh subprocess (Python
start and imports included, as a user runs it). The baseline, in the same run, is a fresh process
that only imports the report module and reads the columns the report reads with pyarrow: what is
left over is the figures, examples and HTML. --write puts the table in bench/results/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LITHO = [sys.executable, "-m", "pipeline.cli"]
TARGET_S, TARGET_MB = 30.0, 5.0
BASELINE = """
import json, sys
from pathlib import Path
from pipeline.output import report_data
out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
rows = report_data.read_rows(out, list(manifest["scores"]) + ["completion_tokens"])
print(rows.table.num_rows)
"""


def make_output(out: Path, rows: int) -> float:
    """Generate the output if ``out`` does not hold one of ``rows`` rows; return its seconds (0 if reused)."""
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["counts"]["rows_in"] == rows:
        return 0.0
    started = time.perf_counter()
    subprocess.run(
        [
            *LITHO,
            "generate",
            "teacher=dummy",
            "filters.lm=null",
            f"n={rows}",
            "teacher.error_rate=0.01",
            "teacher.truncate_rate=0.05",
            "teacher.duplicate_rate=0.02",
            "filters.truncated=drop",
            "filters.thresholds={chars_per_token: {min: 5.9}}",
            "filters.quantile_bands={gzip_ratio: [0.01, 0.99]}",
            f"output.dir={out}",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default /tmp/litho-bench-report-ROWS)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 2,000 rows, one repeat, a temporary --out, no write",
    )
    parser.add_argument("--write", action="store_true", help="write bench/results/report.md")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats, args.write = 2_000, 1, False
        if args.out is None:
            with tempfile.TemporaryDirectory(prefix="litho-bench-report-") as tmp:
                return bench(args, Path(tmp) / "out")
    return bench(args, args.out or Path(f"/tmp/litho-bench-report-{args.rows}"))


def bench(args, out: Path) -> int:
    load = os.getloadavg()[0]
    generate_s = make_output(out, args.rows)
    baseline = [timed([sys.executable, "-c", BASELINE, str(out)]) for _ in range(args.repeats)]
    report = [timed([*LITHO, "report", str(out)]) for _ in range(args.repeats)]
    size_mb = (out / "report.html").stat().st_size / 1e6
    manifest = json.loads((out / "manifest.json").read_text())
    report_s, baseline_s = statistics.median(report), statistics.median(baseline)
    lines = [
        "# Report benchmark",
        "",
        "```",
        f"flock /tmp/litho-bench.lock .venv/bin/python bench/bench_report.py --rows {args.rows}"
        + (" --write" if args.write else ""),
        f"{date.today()}, {os.cpu_count()} CPUs, load average at start {load:.1f} "
        "(the machine is shared: compare within one run)",
        "```",
        "",
        f"Output: {manifest['counts']['rows_in']:,} rows by the dummy teacher, `filters.lm=null`, "
        f"{manifest['counts']['kept']:,} kept, {len(manifest['scores'])} score columns, "
        f"{len(list((out / '.litho' / 'generations').glob('*/block=*/gen-*.parquet'))):,} checkpoint files"
        + (f" (generated in {generate_s:.0f} s)." if generate_s else " (reused from an earlier run)."),
        "",
        "| measure | median of repeats | repeats | target | vs target |",
        "|---|---|---|---|---|",
        f"| `litho report OUT` wall s | {report_s:.1f} | {', '.join(f'{t:.1f}' for t in report)} | "
        f"<= {TARGET_S:.0f} | {report_s / TARGET_S:.2f}x |",
        f"| baseline: import + read the report's columns, s | {baseline_s:.1f} | "
        f"{', '.join(f'{t:.1f}' for t in baseline)} | | report = {report_s / baseline_s:.1f}x baseline |",
        f"| report.html MB | {size_mb:.2f} | | <= {TARGET_MB:.0f} | {size_mb / TARGET_MB:.2f}x |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (ROOT / "bench" / "results" / "report.md").write_text(text)
    ok = report_s <= TARGET_S and size_mb <= TARGET_MB
    print("PASS" if ok else "FAIL: over a target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
