"""The report of a real small run (dummy teacher, Ray), opened in headless Chromium: the page renders,
every section and figure is in the DOM, and the numbers it shows are the manifest's."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow

SECTIONS = (
    "funnel",
    "scores",
    "correlations",
    "breakdowns",
    "examples",
    "throughput",
    "timings",
    "duplicates",
    "probe",
    "config",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def _browse(tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh profile per start
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _Dom(HTMLParser):
    """Sections, images and the elements that carry data-* attributes, with their text."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.marked, self._open = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs)
        if tag in ("td", "tr", "span", "b", "p") and any(k.startswith("data-") for k in attrs):
            entry = {
                "tag": tag,
                "attrs": attrs,
                "text": "",
                "section": self.sections[-1] if self.sections else None,
            }
            self.marked.append(entry)
            self._open.append((tag, entry))

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, text):
        for _, entry in self._open:
            entry["text"] += text


@pytest.fixture(scope="module")
def run_dir(ray_session, tmp_path_factory):
    from pipeline.run import run

    out = tmp_path_factory.mktemp("report_run")
    manifest = run(
        compose(
            "teacher=dummy",
            "filters.lm=null",
            "n=40",
            "teacher.error_rate=0.05",
            "teacher.truncate_rate=0.1",
            "teacher.duplicate_rate=0.15",
            "filters.truncated=drop",
            "dedup=minhash",
            "dedup.exact=false",  # the dummy's shared texts reach near dedup as clusters
            "cluster.teacher_batch_size=10",
            "filters.thresholds={chars_per_token: {min: 6.0}}",
            "filters.quantile_bands={gzip_ratio: [0.05, 0.95]}",
            f"output.dir={out}",
        )
    )
    assert manifest["report"] == "report.html" and (out / "report.html").is_file()
    # A probe's files, as `litho probe` leaves them; `litho report` then rebuilds the report with them.
    (out / "probe").mkdir()
    (out / "probe" / "probe.json").write_text(json.dumps({"arms": [{"arm": "kept", "loss": 3.2}]}))
    shutil.copy(out / "report-funnel.png", out / "probe" / "loss.png")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "report.html" in result.stdout, result.stderr
    return out


@pytest.fixture(scope="module")
def dom(run_dir, tmp_path_factory) -> _Dom:
    tmp = tmp_path_factory.mktemp("chromium")
    parser = _Dom()
    parser.feed(_browse(tmp, run_dir / "report.html", "--dump-dom").stdout)
    return parser


def test_report_renders_in_chromium(run_dir, dom, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    _browse(tmp_path, run_dir / "report.html", "--window-size=1280,9000", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    background = pixels[5, 5]
    assert (np.abs(pixels - background).sum(axis=2) > 30).mean() > 0.03, "the screenshot is blank"
    kept_blue = np.abs(pixels - np.array([0x3B, 0x75, 0xAF])).sum(axis=2) < 40
    assert kept_blue.sum() > 2000, "no plot was drawn (the kept-rows colour is missing)"

    card = (run_dir / "README.md").read_text()  # the dataset card links the report, shows its funnel
    assert "[report.html](report.html)" in card and "](report-funnel.png)" in card
    assert (run_dir / "report-funnel.png").read_bytes()[:4] == b"\x89PNG"

    assert [s for s in dom.sections] == list(SECTIONS)
    plots = [img for img in dom.images if "plot" in img.get("class", "")]
    alts = {img["alt"] for img in plots}
    assert {"funnel", "correlation heat map", "teacher throughput", "phase and stage timings"} <= alts
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {f"histogram of {s}" for s in manifest["scores"]} <= alts
    assert "near cluster sizes" in alts and "probe loss.png" in alts
    for img in plots:
        kind, payload = img["src"].split(",", 1)
        raw = base64.b64decode(payload)
        assert raw.lstrip().startswith(b"<?xml") if "svg" in kind else raw[:4] == b"\x89PNG", img["alt"]


def _cells(dom: _Dom, **attrs) -> list[dict]:
    return [m for m in dom.marked if all(m["attrs"].get(k) == v for k, v in attrs.items())]


def _number(text: str) -> float:
    return float(text.strip().replace(",", ""))


def _following(dom: _Dom, row: dict, n: int) -> list[dict]:
    """The ``n`` marked elements after ``row`` (the cells of a table row)."""
    index = next(i for i, m in enumerate(dom.marked) if m is row)
    return dom.marked[index + 1 : index + 1 + n]


def test_report_numbers_equal_the_manifest(run_dir, dom):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]

    # The funnel table: each step's rows and tokens.
    funnel = {
        m["attrs"]["data-step"]: {c["attrs"]["data-field"]: c["text"] for c in _following(dom, m, 4)}
        for m in dom.marked
        if "data-step" in m["attrs"]
    }
    kinds = {
        m["attrs"]["data-step"]: m["attrs"]["data-kind"] for m in dom.marked if "data-step" in m["attrs"]
    }
    assert _number(funnel["planned"]["rows"]) == counts["planned"]
    assert _number(funnel["kept"]["rows"]) == counts["kept"]
    assert _number(funnel["kept"]["tokens"]) == manifest["tokens"]["kept_target_tokens"]
    drops = {
        f"{reason} ({stage['name']})": n
        for stage in manifest["stages"]
        for reason, n in stage["dropped"].items()
        if reason != "teacher_error"
    }
    shown = {label: _number(cells["rows"]) for label, cells in funnel.items() if kinds[label] == "drop"}
    assert shown == {"teacher errors": counts["teacher_errors"], **drops}
    last_drop = [label for label in funnel if label in drops][-1]  # tokens from the shards, row by row
    assert _number(funnel[last_drop]["tokens_left"]) == manifest["tokens"]["kept_target_tokens"]
    assert _number(_cells(dom, **{"data-headline": "kept"})[0]["text"]) == counts["kept"]
    assert (
        _number(_cells(dom, **{"data-headline": "tokens"})[0]["text"])
        == manifest["tokens"]["kept_target_tokens"]
    )

    # The stage table: rows in and drops by reason.
    for stage in manifest["stages"]:
        row = _cells(dom, **{"data-stage": stage["name"]})[0]
        cells = _following(dom, row, 1 + len(stage["dropped"]))
        assert _number(cells[0]["text"]) == stage["rows_in"]
        assert {c["attrs"]["data-reason"]: int(c["attrs"]["data-rows"]) for c in cells[1:]} == stage[
            "dropped"
        ]

    # Each score card's kept summary, in the manifest's order (completion_tokens last, from the shards).
    scores = [s for s, v in manifest["scores"].items() if v.get("count")]
    kept_rows = _cells(dom, **{"data-summary": "kept"})
    assert len(kept_rows) == len(scores) + 1
    for score, row in zip(scores, kept_rows):
        shown = {c["attrs"]["data-stat"]: c["text"] for c in _following(dom, row, 7)}
        expected = manifest["scores"][score]
        assert _number(shown["count"]) == expected["count"], score
        for stat in ("mean", "min", "p10", "p50", "p90", "max"):
            assert _number(shown[stat]) == pytest.approx(expected[stat], rel=1e-3, abs=1e-9), (score, stat)

    assert _number(_cells(dom, **{"data-teacher": "rows"})[0]["text"]) == counts["generated"]
    near = _cells(dom, **{"data-duplicates": "near"})[0]["text"]
    assert _number(near.split(" rows dropped")[0]) == manifest["dropped_by_reason"]["near_duplicate"]
    assert _number(_cells(dom, **{"data-jaccard": "near"})[0]["text"]) >= 0.8  # the dedup threshold


@pytest.mark.parametrize("command, config_name", [("score", "score"), ("dedup", "dedup_corpus")])
def test_score_and_dedup_outputs_get_a_report(run_dir, tmp_path, command, config_name):
    from pipeline.run import run

    out = tmp_path / command
    overrides = [f"input={run_dir / 'data'}", f"output.dir={out}", "id_column=id"]
    manifest = run(
        compose(*overrides, *(["filters.lm=null"] if command == "score" else []), config_name=config_name),
        command,
    )
    assert manifest["report"] == "report.html"
    parser = _Dom()
    parser.feed((out / "report.html").read_text())
    assert {"funnel", "timings", "config"} <= set(parser.sections) and "throughput" not in parser.sections
    assert ("duplicates" in parser.sections) == (command == "dedup")
    funnel = [m["attrs"]["data-step"] for m in parser.marked if "data-step" in m["attrs"]]
    assert funnel[0] == "rows in" and funnel[-1] == "kept"
    if command == "score":
        assert "scores" in parser.sections and any(
            i["alt"] == "histogram of fertility" for i in parser.images
        )
