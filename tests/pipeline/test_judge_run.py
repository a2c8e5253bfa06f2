"""Judge scores through a run: the embedded teacher as judge (mechanics), and a judge behind a loopback
OpenAI-compatible server whose answers are known; a rerun pays for no rating twice."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline.conftest import compose

pytestmark = pytest.mark.slow


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_embedded_judge_rates_every_kept_row(ray_session, tmp_path):
    from pipeline.run import run

    manifest = run(
        compose("teacher=dummy", "filters.lm=null", "n=4", "filters/judge=embedded", f"output.dir={tmp_path}")
    )
    kept = _rows(tmp_path / "data")
    assert kept and all("judge_quality" in r for r in kept)
    rated = [r["judge_quality"] for r in kept if r["judge_quality"] == r["judge_quality"]]
    assert all(1 <= v <= 10 for v in rated)
    assert manifest["scores"]["judge_quality"]["count"] == len(rated)
    assert [s for s in manifest["stages"] if s["name"] == "judge"][0]["seconds"] > 0
    assert list((tmp_path / ".litho" / "judgements").glob("*/judge-*.parquet"))


def test_openai_judge_scores_are_the_servers_and_a_rerun_asks_nothing(ray_session, tmp_path):
    from generators.teachers.serve import TeacherServer
    from pipeline.run import run
    from tests.filters.scores.test_judge import LengthJudge

    judge = LengthJudge()
    calls = []
    generate = judge.generate
    judge.generate = lambda requests: calls.append(len(requests)) or generate(requests)
    with TeacherServer(judge, model_name="judge", api_key=None) as server:
        setting = (
            f"filters.judge={{teacher: {{_target_: generators.teachers.openai.OpenAITeacher, base_url: '{server.url}', "
            "model: judge, api_key_env: ''}, rubrics: {length: 'Is it long?'}, scale: [1, 10]}"
        )
        overrides = ("teacher=dummy", "filters.lm=null", "n=6", setting, f"output.dir={tmp_path}")
        first = run(compose(*overrides))
        asked = sum(calls)
        second = run(compose(*overrides))
    kept = _rows(tmp_path / "data")
    assert asked == first["counts"]["kept"] == len(kept) and sum(calls) == asked  # nothing asked twice
    assert all(r["judge_length"] == min(10, 1 + len(r["text"]) // 20) for r in kept)
    assert second["scores"]["judge_length"] == first["scores"]["judge_length"]
