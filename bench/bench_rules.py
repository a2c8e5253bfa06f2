"""The published rule sets against datatrove 0.10.1's own filters: decisions on real man pages, then speed.

1. Agreement (issue 22's check): ``--pages`` man pages of sections 1 and 8 rendered with ``man -l | col -b``,
   first 4,000 characters (bench/man_pages.py). Per Gopher rule at its published bound, alone: drops by
   litho and by datatrove's filter with only that rule on, decisions that differ, and litho's values that
   datatrove's own rule pins (bench/datatrove_rules.py); per rule set, whole-filter drop reasons that differ.
   ``--before REV`` adds the repetition scores of a git revision (e.g. main before issue 22) at their
   thresholds, with their rank correlation and median ratio to datatrove's values.
2. Speed: ``--rows`` rows of real text (pydoc topics and man pages cut at line ends, at most 1,000
   characters) through litho's rule stages (the scorer and the four rule sets, in-process, batches of
   1,000, as one Ray worker runs them) and through datatrove's four filters chained with their own
   ``run()``, alternating in chunks so both see the same load.

    python bench/bench_rules.py                                   # 800 pages, 100,000 rows
    python bench/bench_rules.py --quick                           # 40 pages, 300 rows: the size tests/bench runs
    python bench/bench_rules.py --before a4f3573 --write          # + main's scores; bench/results/rules.md
    python bench/bench_rules.py --before a4f3573 --texts runs/latest   # what changes in a run's kept texts
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.datatrove_rules import SHARED, confirms, decide, isolated, reference  # noqa: E402
from bench.machine import cpu_model  # noqa: E402
from bench.man_pages import real_rows, rendered_man_pages  # noqa: E402
from filters.rules.rule_sets import RULE_SETS, PublishedRules  # noqa: E402
from filters.scores.rule_scores import RuleSetScores  # noqa: E402

SETS = tuple(RULE_SETS)


def _reasons(batch: dict, rule_set: str, thresholds: dict | None = None) -> list[str]:
    fresh = {k: v for k, v in batch.items() if not k.startswith(("drop_reason", "_litho"))}
    return list(PublishedRules(rule_set, thresholds)(fresh)["drop_reason"])


def _before(rev: str, pages: list[str]) -> dict:
    """The repetition scores of ``rev`` (its filters/scores/repetition.py, run as it was)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:filters/scores/repetition.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("repetition_before")
    exec(compile(source, f"{rev}:filters/scores/repetition.py", "exec"), module.__dict__)
    return module.RepetitionMetrics(ngrams=(5, 10))({"text": np.array(pages, dtype=object)})


def agreement(pages: list[str], before: str | None) -> str:
    batch = RuleSetScores(rule_sets=SETS)({"text": np.array(pages, dtype=object)})
    lines = [
        f"{len(pages)} man pages (sections 1 and 8, `man -l | col -b`, first 4,000 characters)\n",
        "| rule (threshold) | litho drops | datatrove drops | decisions that differ | values pinned by datatrove |",
        "|---|---|---|---|---|",
    ]
    for rule_set in ("gopher_repetition", "gopher_quality"):
        for rule in RULE_SETS[rule_set]:
            together = SHARED.get(rule.reason, (rule.reason,))
            off = {r.reason: None for r in RULE_SETS[rule_set] if r.reason not in together}
            ours = [r in together for r in _reasons(batch, rule_set, off)]
            step = isolated(rule_set, rule.reason, rule.bound)
            theirs = [decide(step, text) in together for text in pages]
            verdicts = [confirms(rule_set, rule, float(v), t) for v, t in zip(batch[rule.column], pages)]
            pinned = f"{verdicts.count(True)}/{len(pages) - verdicts.count(None)}"
            differ = sum(a != b for a, b in zip(ours, theirs))
            lines.append(
                f"| {rule.reason} ({rule.bound:g}) | {sum(ours)} | {sum(theirs)} | {differ} | {pinned} |"
            )
    lines += [
        "",
        "| rule set | litho drops | datatrove drops | drop reasons that differ |",
        "|---|---|---|---|",
    ]
    for rule_set in SETS:
        ours = _reasons(batch, rule_set)
        theirs = [decide(reference(rule_set), text) for text in pages]
        differ = sum(a != b for a, b in zip(ours, theirs))
        lines.append(f"| {rule_set} | {sum(map(bool, ours))} | {sum(map(bool, theirs))} | {differ} |")
    if before:
        lines += _before_table(before, pages, batch)
    return "\n".join(lines)


def _before_table(rev: str, pages: list[str], batch: dict) -> list[str]:
    from scipy.stats import spearmanr

    old = _before(rev, pages)
    lines = [
        "",
        f"Before: the repetition scores of {rev} (datatrove's values: litho's now, pinned above)\n",
        "| rule (threshold) | litho drops | datatrove drops | decisions that differ | Spearman | median litho/datatrove |",
        "|---|---|---|---|---|---|",
    ]
    for column, reason, bound in (
        ("rep_dup_line_frac", "dup_line_frac", 0.3),
        ("rep_dup_ngram_frac_5", "duplicated_5_n_grams", 0.15),
        ("rep_dup_ngram_frac_10", "duplicated_10_n_grams", 0.10),
    ):
        mine, truth = np.asarray(old[column], float), np.asarray(batch[column], float)
        ours = mine > bound
        theirs = np.array([decide(isolated("gopher_repetition", reason, bound), t) == reason for t in pages])
        both = (mine > 0) & (truth > 0)
        ratio = statistics.median(mine[both] / truth[both]) if both.any() else float("nan")
        rho = spearmanr(mine, truth).statistic
        lines.append(
            f"| {reason} ({bound:g}) | {ours.sum()} | {theirs.sum()} | {(ours != theirs).sum()} | {rho:.2f} | {ratio:.2f} |"
        )
    return lines


def texts_of(path: Path) -> list[str]:
    """The texts a teacher wrote: a litho run's checkpoints (every generated text, kept or not), or a JSON
    file with a ``texts`` list (tests/filters/rules/teacher_texts.json)."""
    import json

    import pyarrow.parquet as pq

    if path.is_dir():
        files = sorted((path / ".litho" / "generations").rglob("*.parquet"))
        return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist() if t]
    return json.loads(path.read_text())["texts"]


def kept_change(rev: str, texts: list[str]) -> str:
    """What the corrected repetition rules change in which texts are kept: ``rev``'s scores at its default
    bounds (duplicate lines 0.3, duplicate 5-grams 0.15, 10-grams 0.10) against the gopher_repetition set."""
    old = _before(rev, texts)
    dropped_before = (
        (np.asarray(old["rep_dup_line_frac"]) > 0.3)
        | (np.asarray(old["rep_dup_ngram_frac_5"]) > 0.15)
        | (np.asarray(old["rep_dup_ngram_frac_10"]) > 0.10)
    )
    batch = RuleSetScores(rule_sets=("gopher_repetition",))({"text": np.array(texts, dtype=object)})
    dropped_now = np.array([bool(r) for r in _reasons(batch, "gopher_repetition")])
    return (
        f"| texts | dropped by {rev}'s rules | dropped by gopher_repetition | decided differently |\n"
        f"|---|---|---|---|\n"
        f"| {len(texts)} | {dropped_before.sum()} | {dropped_now.sum()} | {(dropped_before != dropped_now).sum()} |"
    )


def speed(rows: list[str], chunk: int = 5_000, batch_size: int = 1_000) -> str:
    """CPU seconds (and wall seconds) of litho's rule stages and of datatrove's chained filters on the same
    rows. CPU time of this process is the measure: on a shared machine the wall clock counts the others."""
    from datatrove.data import Document

    scorer = RuleSetScores(rule_sets=SETS)  # built once, as an actor holds it
    rules = [PublishedRules(name) for name in SETS]
    filters = [reference(name) for name in SETS]
    cpu = {"litho": 0.0, "datatrove": 0.0}
    wall = dict(cpu)
    kept = {"litho": 0, "datatrove": 0}

    def datatrove(part: list[str]) -> int:
        docs = (Document(text=t, id=str(i)) for i, t in enumerate(part))
        for step in filters:
            docs = step.run(docs)
        return sum(1 for _ in docs)

    def litho(part: list[str]) -> int:
        found = 0
        for b in range(0, len(part), batch_size):
            batch = scorer({"text": np.array(part[b : b + batch_size], dtype=object)})
            for rule in rules:
                batch = rule(batch)
            found += int((batch["drop_reason"] == "").sum())
        return found

    for i, start in enumerate(range(0, len(rows), chunk)):
        part = rows[start : start + chunk]
        order = (("datatrove", datatrove), ("litho", litho))
        for name, run in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            began, began_cpu = time.perf_counter(), time.process_time()
            kept[name] += run(part)
            cpu[name] += time.process_time() - began_cpu
            wall[name] += time.perf_counter() - began
    n = len(rows)
    lines = [
        f"{n:,} rows of real text ({len(set(rows)):,} distinct, mean {sum(map(len, rows)) / n:.0f} characters), "
        f"all four rule sets, chunks of {chunk:,} rows alternating who goes first\n",
        "| | CPU seconds | CPU ms a row | wall seconds | rows kept |",
        "|---|---|---|---|---|",
    ]
    for name in ("datatrove", "litho"):
        lines.append(
            f"| {name} | {cpu[name]:.1f} | {1000 * cpu[name] / n:.2f} | {wall[name]:.1f} | {kept[name]:,} |"
        )
    lines.append(
        f"\nlitho / datatrove: {cpu['litho'] / cpu['datatrove']:.2f}x CPU time, "
        f"{wall['litho'] / wall['datatrove']:.2f}x wall time"
    )
    return "\n".join(lines)


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=800, help="rendered man pages for the agreement table")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the speed comparison")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (make bench ARGS=--quick): 40 pages, 300 rows, no write",
    )
    parser.add_argument(
        "--before", help="a git revision whose repetition scores to compare too (e.g. a4f3573)"
    )
    parser.add_argument("--write", action="store_true", help="also write bench/results/rules.md")
    parser.add_argument(
        "--texts",
        type=Path,
        help="with --before, only: which of a run's texts (its folder) or a JSON's `texts` each rule set drops",
    )
    args = parser.parse_args()
    if args.texts:
        if not args.before:
            parser.error("--texts needs --before REV (the revision to compare with)")
        print(kept_change(args.before, texts_of(args.texts)))
        return 0
    pages_n, rows_n = (40, 300) if args.quick else (args.pages, args.rows)
    args.write = args.write and not args.quick
    command = "python bench/bench_rules.py " + " ".join(sys.argv[1:])
    started = machine()
    print(f"{command}\n{date.today()}, {started}", flush=True)
    report = agreement(rendered_man_pages(pages_n), args.before)
    print("\n" + report, flush=True)
    timing = speed(real_rows(rows_n))
    ended = machine()
    print(f"\n{timing}\n\nat the end: {ended}", flush=True)
    if args.write:
        out = ROOT / "bench" / "results" / "rules.md"
        header = f"```\n{command}\n{date.today()}, at the start: {started}\nat the end: {ended}\n```"
        out.write_text(
            f"# Published rule sets against datatrove 0.10.1\n\n{header}\n\n## Agreement\n\n{report}\n\n## Speed\n\n{timing}\n"
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
