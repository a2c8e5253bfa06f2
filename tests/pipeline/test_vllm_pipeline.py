"""`litho generate` with vLLM: teacher=vllm in the teacher actor, and teacher=openai against vLLM's own
OpenAI-compatible server on loopback (both ``-m vllm``: `make test-vllm` runs them in .venv-vllm); and the
served-model-name check, which needs no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "VLLM_NO_USAGE_STATS": "1"}
SMALL_RUN = [
    "n=8",
    "teacher.sampling.max_new_tokens=48",
    "cluster.teacher_batch_size=8",
    "filters.min_words=5",
    "filters.lm=null",  # the scorer model is not what these tests are about
]


def _litho(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _rows(out: Path) -> tuple[dict, list[dict]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [
        r
        for part in ("data", "rejected")
        for f in sorted((out / part).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    return manifest, rows


def test_a_served_model_name_is_free_text_but_needs_filters_tokenizer(tmp_path):
    served = ["teacher=openai", "teacher.base_url=http://127.0.0.1:9/v1", "teacher.model=smollm2"]
    result = _litho(*served, f"output.dir={tmp_path}", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "litho: error: filters.tokenizer=smollm2: teacher.model=smollm2 is the name the server at teacher.base_url serves"
    ), result.stderr
    assert "set filters.tokenizer to a local tokenizer" in lines[0]
    # A served name that is not a local model is no error of its own: the next check (n) speaks first.
    result = _litho(
        *served, "filters.tokenizer=embedded:smollm2", "n=0", f"output.dir={tmp_path}", timeout=120
    )
    assert result.returncode == 2 and "litho: error: n=0:" in result.stderr, result.stderr


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(1200)  # a vLLM CPU engine start per run (minutes on 2 cores)
def test_generate_with_the_vllm_teacher(tmp_path):
    """Over 30 s: a `litho generate` process whose teacher actor starts vLLM's CPU engine (eager, ~25 s of
    the ~60 s); the engine inside litho's Ray actor is what it tests."""
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    result = _litho(
        "teacher=vllm",
        "teacher.enforce_eager=true",
        "teacher.max_model_len=1024",
        *SMALL_RUN,
        f"output.dir={out}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    manifest, rows = _rows(out)
    assert manifest["counts"]["generated"] == 8 and manifest["counts"]["teacher_errors"] == 0
    assert len(rows) == 8 and manifest["counts"]["kept"] >= 1
    for row in rows:
        words = row["text"].split()
        assert row["teacher"] == "embedded:smollm2" and 0 < row["completion_tokens"] <= 48
        assert row["finish_reason"] in ("stop", "length") and row["prompt_tokens"] > 10
        assert len(words) >= 3 and sum(w.isalpha() for w in words) / len(words) > 0.5  # prose, not noise
    assert "teacher: 8/8 rows (100%)" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """vLLM's OpenAI-compatible server for the embedded teacher's safetensors directory, on loopback."""
    pytest.importorskip("vllm")
    from generators.teachers.models import materialize, resolve

    model_dir = materialize(resolve("embedded:smollm2"))
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "1024", "--enforce-eager", "--kv-cache-memory-bytes", str(2**30),
        # litho sends every request a seed; split prompts of seeded requests crash vLLM's CPU engine.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
    ]  # fmt: skip
    with open(log, "w") as sink:
        server = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as answer:
                    served = [m["id"] for m in json.loads(answer.read())["data"]]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"vLLM server did not start:\n{log.read_text()[-4000:]}")
                time.sleep(1)
        assert served == ["smollm2"]
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.vllm
@pytest.mark.slow
def test_generate_with_the_openai_teacher_against_a_vllm_server(vllm_server, tmp_path):
    out = tmp_path / "run"
    served = [
        "teacher=openai",
        f"teacher.base_url={vllm_server}",
        "teacher.model=smollm2",
        "teacher.api_key_env=",
    ]
    result = _litho(*served, "filters.tokenizer=embedded:smollm2", *SMALL_RUN, f"output.dir={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    manifest, rows = _rows(out)
    assert manifest["counts"]["generated"] == 8 and manifest["counts"]["teacher_errors"] == 0
    assert len(rows) == 8 and manifest["counts"]["kept"] >= 1
    for row in rows:
        words = row["text"].split()
        assert (
            row["teacher"] == "smollm2" and 0 < row["completion_tokens"] <= 48 and row["prompt_tokens"] > 10
        )
        assert len(words) >= 3 and sum(w.isalpha() for w in words) / len(words) > 0.5
