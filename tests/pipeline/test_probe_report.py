"""The probe's report: probe.json is strict JSON with every run, the plot is written, the table reads."""

from __future__ import annotations

import json

import numpy as np

from pipeline.probe import report, stats
from pipeline.probe.arms import Arm
from pipeline.probe.pool import Pool


def test_report_json_plot_and_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    tokens = rng.integers(50, 500, n)
    pool = Pool(
        texts=["x"] * n,
        columns={"q": rng.normal(size=n)},
        drop_reason=np.full(n, "", dtype=object),
        groups=np.asarray(["a", "b"] * (n // 2), dtype=object),
        group_column="domain",
    )
    arms = [Arm("random", "random"), Arm("random_b", "random"), Arm("top(q)", "top", "q")]
    chosen = {(a.name, s): np.arange(s, s + 10) for a in arms for s in range(3)}
    shift = {"random": 0.0, "random_b": 0.001, "top(q)": -0.05}
    results = [
        {
            "arm": a.name,
            "seed": s,
            "bpb": {
                "ev": 3.0 + 0.1 * s + shift[a.name] + 0.001 * ((s * 7) % 3),
                "other": 2.0 + shift[a.name],
            },
            "train_s": 1.0,
            "eval_s": 0.1,
            "tokens_per_s": 100.0,
            "parameters": 1234,
            "dtype": "fp32",
            "device": "cpu",
        }
        for a in arms
        for s in range(3)
    ]
    context = {
        "pool": {
            "source": "p",
            "files": 1,
            "rows_read": n,
            "rows_overlapping_eval": 0,
            "rows": n,
            "tokens": 1,
        },
        "eval_sets": {
            "ev": {"docs": 3, "bytes": 100, "tokens": 30},
            "other": {"docs": 1, "bytes": 10, "tokens": 3},
        },
        "vocab": {"size": 10, "distinct": 9, "rare_members": 0},
        "load_avg": {"start": [1, 1, 1], "end": [1, 1, 1]},
        "timings_s": {"total_s": 1.0},
        "config": {"student": {"hidden_size": 8}},
    }
    result = report.build(arms, chosen, tokens, pool, results, 1000, 3, context)
    report.write(tmp_path, result)
    data = json.loads(
        (tmp_path / "probe.json").read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
    )
    assert len(data["runs"]) == 9 and data["beats_random_on_every_set"] == ["top(q)"]
    assert data["stats"]["ev"]["arms"]["top(q)"]["verdict"] == stats.BEATS
    assert set(data["pool"]["group_token_share"]) == {"a", "b"}
    assert (tmp_path / "probe.png").stat().st_size > 5000
    table = report.summary(data)
    assert "top(q)" in table and stats.BEATS in table and "noise floor" in table
    assert any(line.startswith("ev: top(q): -0.0500 bits/byte vs random") for line in data["verdicts"])
