"""The probe's duplication positive control at the default probe size: can ``litho probe`` as it ships
(its student, budget and seeds) see that repeated documents train a worse student than the same
documents deduplicated, at equal tokens (Lee et al. 2022; Hernandez et al. 2022)?

Two pools of real /usr/share/doc passages: ``deduplicated`` holds each passage once, ``duplicated``
the same passages with a few repeated many times, so that copies are most of its tokens. With
``pools`` the ``random`` arms sample the first pool (deduplicated); ``pool(duplicated)`` must be worse
than them beyond noise. tests/pipeline/test_probe_duplication.py runs the same control with a tiny
student in ``make test``.

    flock /tmp/litho-heavy.lock python bench/bench_probe_controls.py --write
    python bench/bench_probe_controls.py --quick        # tiny student, 20k tokens: the test's size
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = [
    "student.hidden_size=64",
    "student.layers=2",
    "student.heads=4",
    "student.intermediate_size=256",
    "student.seq_len=128",
    "student.max_vocab=2048",
    "student.batch_size=8",
    "budget_tokens=20000",
    "eval.builtin=[pydoc]",
    "eval.max_chars=40000",
]


def write_pools(root: Path, unique: int, repeated: int, copies: int) -> tuple[Path, Path]:
    """``(deduplicated, duplicated)`` pool directories of the same real passages."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.probe import corpus

    docs = [d["text"] for d in itertools.islice(corpus.documents("doc", "pool"), unique)]
    pools = {"deduplicated": docs, "duplicated": docs + docs[:repeated] * (copies - 1)}
    for name, texts in pools.items():
        (root / name / "data").mkdir(parents=True)
        pq.write_table(pa.table({"text": texts}), root / name / "data" / "train-00000-of-00001.parquet")
    return root / "deduplicated", root / "duplicated"


def control(root: Path, unique: int, repeated: int, copies: int, overrides: list[str]) -> dict:
    """Run the control; returns the probe report with ``control``: deduplicated minus duplicated."""
    from pipeline.probe import stats
    from pipeline.probe.run import run_probe
    from tests.pipeline.conftest import compose

    deduplicated, duplicated = write_pools(root, unique, repeated, copies)
    cfg = compose(
        f"pools={{deduplicated: {deduplicated}, duplicated: {duplicated}}}",  # random: the first pool
        f"output.dir={root / 'probe'}",
        "halves=[]",
        "filters_arm=false",
        *overrides,
        config_name="probe",
    )
    result = run_probe(cfg)
    result["control"] = {
        name: stats.paired_difference(result["runs"], name, "random", "pool(duplicated)")
        for name in result["stats"]
    }
    return result


def main() -> None:
    from pipeline.probe.report import summary

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): the test's tiny student and budget",
    )
    parser.add_argument("--unique", type=int, default=None, help="passages (default: enough for the budget)")
    parser.add_argument("--write", action="store_true", help="append the result to bench/results/probe.md")
    parser.add_argument("--probe-args", default="", help="extra litho probe overrides (space-separated)")
    args = parser.parse_args()
    unique = args.unique or (140 if args.quick else 1400)  # about 330 tokens a passage
    repeated, copies = unique // 17, 40  # copies are about three quarters of the duplicated pool's tokens
    overrides = (TINY if args.quick else []) + args.probe_args.split()
    started, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = control(Path(tmp), unique, repeated, copies, overrides)
        text = summary(result)
    lines = [text, ""]
    for name, d in result["control"].items():
        lines.append(
            f"control {name}: deduplicated - duplicated = {d['mean']:+.4f} bits/byte "
            f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}], noise floor "
            f"{result['stats'][name]['noise']['noise_floor']:.4f}: {d['verdict'].replace('pool(duplicated)', 'duplicated')}"
        )
    lines.append(
        f"{unique} passages, {repeated} of them x{copies}; {time.perf_counter() - started:.0f} s, load "
        f"{' '.join(f'{x:.1f}' for x in load)} -> {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print("\n".join(lines))
    if args.write:
        command = "python bench/bench_probe_controls.py " + " ".join(sys.argv[1:])
        with (ROOT / "bench" / "results" / "probe.md").open("a") as handle:
            handle.write(
                f"\n```\n{command}\n{time.strftime('%Y-%m-%d %H:%M')}\n" + "\n".join(lines) + "\n```\n"
            )
    print(json.dumps({k: v["verdict"] for k, v in result["control"].items()}))


if __name__ == "__main__":
    main()
