"""The run report's logic on a hand-made output directory (no Ray, no model): funnel arithmetic,
bounds, examples, duplicates, the probe section and escaping."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.rules.thresholds import band_bounds
from pipeline.output import report_data as data
from pipeline.output import report_examples as ex
from pipeline.output.manifest import summarize
from pipeline.output.report import build, write_report

REASONS = {"teacher_error": "sanity", "too_short": "sanity", "score_above_max": "quantile_bands"}


def _output(tmp: Path, n: int = 60) -> tuple[Path, dict, dict]:
    """An output directory as a generate run leaves it: kept and rejected shards, manifest, config."""
    rng = np.random.default_rng(0)
    ids = [f"{i:04d}" for i in range(n)]
    score = rng.normal(5.0, 1.0, n)
    reasons = np.array([""] * n, dtype=object)
    reasons[:3] = "teacher_error"
    reasons[3:8] = "too_short"
    reasons[8:11] = "exact_duplicate"
    reasons[11:14] = "score_above_max"
    texts = [f"text {i} " + "word " * int(20 + i) for i in range(n)]
    for i in range(3, 8):  # the too_short rows: the typical one is shown
        texts[i] = f"<script>alert('x')</script> & short {i}"
    for i in range(8, 11):
        texts[i] = texts[20]
    tokens = np.array([0] * 3 + [len(t.split()) for t in texts[3:]])
    table = pa.table(
        {
            "id": ids,
            "text": ["" if r == "teacher_error" else t for r, t in zip(reasons, texts)],
            "domain": [["science", "computing"][i % 2] for i in range(n)],
            "format": ["qa"] * n,
            "n_tokens": tokens,
            "score": np.where(reasons == "teacher_error", np.nan, score),
            "drop_reason": reasons.tolist(),
            "duplicate_of": [ids[20] if r == "exact_duplicate" else "" for r in reasons],
        }
    )
    kept = reasons == ""
    (tmp / "data").mkdir(parents=True)
    (tmp / "rejected").mkdir()
    pq.write_table(
        table.filter(pa.array(kept)).drop_columns(["drop_reason", "duplicate_of"]), tmp / "data/train.parquet"
    )
    pq.write_table(table.filter(pa.array(~kept)), tmp / "rejected/rejected.parquet")
    stages = [
        {"name": "sanity", "kind": "filter", "rows_in": n, "dropped": {"teacher_error": 3, "too_short": 5}},
        {"name": "quantile_bands", "kind": "filter", "rows_in": n - 8, "dropped": {"score_above_max": 3}},
        {"name": "exact_dedup", "kind": "dedup", "rows_in": n - 11, "dropped": {"exact_duplicate": 3}},
    ]
    for stage in stages:
        stage["seconds"] = 0.5
    manifest = {
        "litho_version": "test",
        "output_dir": str(tmp),
        "counts": {"planned": n, "reused": 0, "generated": n - 3, "teacher_errors": 3, "rows_in": n}
        | {"kept": int(kept.sum()), "dropped": int((~kept).sum())},
        "dropped_by_reason": {"exact_duplicate": 3, "score_above_max": 3, "teacher_error": 3, "too_short": 5},
        "tokens": {"kept_target_tokens": int(tokens[kept].sum()), "teacher_completion_tokens": 0},
        "scores": {"n_tokens": summarize(tokens[kept].astype(float)), "score": summarize(score[kept])},
        "stages": stages,
        "timings_s": {"plan_s": 0.1, "generate_s": 2.0, "write_s": 1.0, "total_s": 4.0},
    }
    config = {
        "teacher": {"_target_": "generators.teachers.dummy.DummyTeacher", "name": "dummy"},
        "filters": {
            "min_words": 40,
            "thresholds": {"score": {"max": 7.5}},
            "quantile_bands": {"score": [0.0, 0.9]},
        },
        "n": n,
        "seed": 0,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    return tmp, manifest, config


def test_funnel_steps_add_up_to_the_manifest(tmp_path):
    out, manifest, _ = _output(tmp_path)
    rows = data.read_rows(out, ["n_tokens", "score"])
    steps = data.funnel(manifest, rows)
    labels = [s["label"] for s in steps]
    assert labels == [
        "planned",
        "teacher errors",
        "generated",
        "too_short (sanity)",
        "score_above_max (quantile_bands)",
        "exact_duplicate (exact_dedup)",
        "kept",
    ]
    assert steps[0]["rows"] == 60 and steps[1]["rows"] == 3 and steps[2]["rows"] == 57
    assert steps[-2]["left"] == steps[-1]["rows"] == manifest["counts"]["kept"]
    assert steps[-2]["tokens_left"] == steps[-1]["tokens"] == manifest["tokens"]["kept_target_tokens"]
    assert rows.rows_by_reason == {"": 46, **manifest["dropped_by_reason"]}


def test_a_sample_keeps_exact_totals(tmp_path):
    out, manifest, _ = _output(tmp_path)
    rows = data.read_rows(out, ["score"], sample=20)
    assert rows.sampled and 5 < rows.table.num_rows < 40 and rows.total == 60
    assert rows.rows_by_reason[""] == manifest["counts"]["kept"]


def test_quantile_band_bounds_are_recomputed_over_the_rows_the_band_saw(tmp_path):
    out, manifest, config = _output(tmp_path)
    rows = data.read_rows(out, ["score"])
    lines = {line["label"]: line["value"] for line in data.bounds(config, manifest, rows)["score"]}
    reasons = rows.column("drop_reason")
    saw = np.isin(reasons, ["", "score_above_max", "exact_duplicate"])
    expected = band_bounds(rows.column("score")[saw], (0.0, 0.9))
    assert lines["quantile_bands q0.9"] == pytest.approx(expected["max"])
    assert lines["quantile_bands q0"] == pytest.approx(expected["min"])
    assert lines["thresholds.score.max"] == 7.5
    assert data.bounds(config, manifest, rows)["n_words"] == [
        {"label": "min_words", "side": "min", "value": 40.0}
    ]


def test_rule_sets_that_ran_draw_their_bounds(tmp_path):
    out, manifest, config = _output(tmp_path)
    rows = data.read_rows(out, ["score"])
    config["filters"]["rule_sets"] = ["gopher_repetition", "c4"]  # c4 did not run in this manifest
    config["filters"]["rule_thresholds"] = {"gopher_repetition": {"dup_line_frac": 0.5, "top_2_gram": None}}
    manifest["stages"].append({"name": "gopher_repetition", "kind": "filter", "rows_in": 40, "dropped": {}})
    lines = data.bounds(config, manifest, rows)
    assert lines["rep_dup_line_frac"] == [
        {"label": "gopher_repetition.dup_line_frac", "side": "max", "value": 0.5}
    ]
    assert lines["rep_dup_ngram_frac_5"][0]["value"] == 0.15 and "rep_top_ngram_frac_2" not in lines
    assert "c4_sentences" not in lines


def test_examples_pick_extremes_and_the_typical_dropped_row(tmp_path):
    out, _, _ = _output(tmp_path)
    rows = data.read_rows(out, ["score"])
    kept = rows.kept
    values, ids = rows.column("score")[kept], rows.column("id")[kept]
    found = dict((w, (i, v)) for w, i, v in ex.extremes(rows, "score"))
    assert found["lowest"] == (ids[values.argmin()], values.min())
    assert found["highest"] == (ids[values.argmax()], values.max())
    typical = ex.typical_dropped(rows, ["score"])
    assert set(typical) == {"teacher_error", "too_short", "exact_duplicate", "score_above_max"}
    mine = rows.column("drop_reason") == "too_short"
    scores = rows.column("score")[mine]
    nearest = rows.column("id")[mine][np.argmin(np.abs(scores - np.median(scores)))]
    assert typical["too_short"] == nearest


def test_duplicate_clusters_and_pair(tmp_path):
    out, manifest, _ = _output(tmp_path)
    rows = data.read_rows(out, ["score"])
    found = ex.duplicates(rows, manifest)
    assert found["exact"]["dropped"] == 3 and found["exact"]["sizes"] == {4: 1}
    duplicate, kept = found["exact"]["pair"]
    assert kept == "0020" and duplicate in {"0008", "0009", "0010"}
    assert ex.pair_jaccard("a b c d e f", "a b c d e f", 5) == 1.0
    assert ex.pair_jaccard("a b c d e f", "a b c d e g", 5) == pytest.approx(1 / 3)


def test_report_html_is_self_contained_and_escapes_texts(tmp_path):
    out, manifest, config = _output(tmp_path)
    (out / "probe").mkdir()
    (out / "probe" / "probe.json").write_text(
        json.dumps({"model": "tiny", "results": [{"arm": "kept", "loss": 2.5}]})
    )
    (out / "probe" / "curve.png").write_bytes((out / "probe" / "probe.json").read_bytes())  # any bytes
    assert write_report(out, manifest, config, strict=True) == "report.html"
    html = (out / "report.html").read_text()
    for section in (
        "funnel",
        "scores",
        "correlations",
        "breakdowns",
        "examples",
        "timings",
        "duplicates",
        "probe",
    ):
        assert f'id="{section}"' in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert (
        "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; short" in html
    )
    svgs = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(svgs) >= 5 and all(base64.b64decode(s).lstrip().startswith(b"<?xml") for s in svgs)
    assert "probe curve.png" in html and "<td>arm</td>" not in html and "<th>arm</th>" in html
    assert (out / "report-funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sections_without_data_are_left_out(tmp_path):
    out, manifest, config = _output(tmp_path)
    manifest["stages"] = [s for s in manifest["stages"] if s["name"] != "exact_dedup"]
    del config["teacher"]
    html, _ = build(out, manifest, config)
    assert 'id="duplicates"' not in html and 'id="probe"' not in html and 'id="throughput"' not in html
    assert 'id="funnel"' in html


def test_a_failing_report_does_not_fail_the_run(tmp_path, caplog):
    out, manifest, config = _output(tmp_path)
    (out / "data" / "train.parquet").write_bytes(b"not parquet")
    assert write_report(out, manifest, config) is None
    assert "litho report" in caplog.text and not (out / "report.html").exists()
    with pytest.raises(pa.ArrowInvalid):
        write_report(out, manifest, config, strict=True)


def test_probe_json_of_any_shape_becomes_tables():
    from pipeline.output.report import _tables

    tables = _tables(
        "probe", {"model": "m", "arms": [{"a": 1, "b": 0.123456}, {"a": 2, "c": "x"}], "cfg": {"k": 1}}
    )
    assert tables[0] == {"title": "probe", "columns": ["key", "value"], "rows": [["model", "m"]]}
    assert tables[1] == {
        "title": "probe.arms",
        "columns": ["a", "b", "c"],
        "rows": [["1", "0.1235", ""], ["2", "", "x"]],
    }
    assert tables[2]["title"] == "probe.cfg" and tables[2]["rows"] == [["k", "1"]]


def test_without_rejected_shards_tokens_are_unknown_but_rows_add_up(tmp_path):
    out, manifest, config = _output(tmp_path)
    (out / "rejected" / "rejected.parquet").unlink()  # output.write_rejected=false
    rows = data.read_rows(out, ["n_tokens", "score"])
    steps = data.funnel(manifest, rows)
    assert [s["tokens"] for s in steps] == [None] * len(steps)
    assert steps[-1]["rows"] == steps[-2]["left"] == manifest["counts"]["kept"]
    html, _ = build(out, manifest, config)
    assert 'id="funnel"' in html and 'id="scores"' in html


@pytest.mark.parametrize(
    "value, shown",
    [
        (5663, "5,663"),
        (1173.4, "1,173"),
        (1171.0, "1,171"),
        (6.1637, "6.164"),
        (0.000123456, "0.0001235"),
        (None, "—"),
    ],
)
def test_numbers_read_alike(value, shown):
    from pipeline.output.report import _number

    assert _number(value) == shown


def test_throughput_merges_long_runs_of_batches_and_keeps_their_totals():
    from pipeline.output import report_plots

    batches = [
        {"t0": float(i), "t1": i + 0.9, "tokens": 100 + i % 7, "seconds": 0.9, "worker": "w"}
        for i in range(1000)
    ]
    merged = report_plots._merged(batches, most=50)
    assert len(merged) == 50
    assert sum(b["tokens"] for b in merged) == sum(b["tokens"] for b in batches)
    assert sum(b["seconds"] for b in merged) == pytest.approx(0.9 * 1000)
    assert merged[0]["t0"] == 0.0 and merged[-1]["t1"] == 999.9
    assert report_plots._merged(batches[:10], most=50) == batches[:10]  # short runs are drawn batch by batch
    report_plots.throughput(batches)  # draws without one artist per batch


def test_histogram_svg_draws_the_counts_bounds_and_labels():
    """The score histogram is SVG written by hand (report_plots.histogram): each side's step path rises to
    its bin counts, bounds are lines at their values, and the text is escaped."""
    import xml.etree.ElementTree as ET

    from pipeline.output import report_plots

    kept, dropped = np.array([1.0, 1.0, 1.0, 2.0]), np.array([3.0])
    lines = [{"value": 2.5, "side": "max", "label": "max <2.5>"}]
    uri = report_plots.histogram("a&b", kept, dropped, lines, bins=4)
    root = ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "a&b" in texts and "max <2.5>" in texts and "kept (4)" in texts and "dropped (1)" in texts
    fills = [p for p in root.iter(f"{ns}path") if p.get("fill") == report_plots.KEPT]
    assert len(fills) == 1
    # Four bins over the 0.5-99.5 percentile range: kept counts 3, 0, 1, 0 -> the path's heights; the tallest
    # reaches the y range's top / 1.05 (220 px at 0, 25 px at the top).
    heights = [float(v) for v in re.findall(r"V([\d.]+)H", fills[0].get("d"))]
    assert heights[0] == pytest.approx(220 - 195 / 1.05, abs=0.1) and heights[1] == 220.0
    assert heights[2] == pytest.approx(220 - 195 / 1.05 / 3, abs=0.1)
    bound = [p for p in root.iter(f"{ns}path") if p.get("stroke-dasharray") == "4 2"]
    lo, hi = np.percentile(np.r_[kept, dropped], [0.5, 99.5])  # the x range, pixels 64..447
    assert len(bound) == 1 and bound[0].get("d").startswith(f"M{64 + (2.5 - lo) / (hi - lo) * 383:.1f},")
