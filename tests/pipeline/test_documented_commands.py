"""Every command shown in README.md and docs/*.md works as written (issue #15).

Each ```bash line of the docs is found here and handled by one rule: a litho command (or its make
target) is composed exactly as written, checked as the CLI checks it, and, unless it needs what this
machine lacks (a GPU, a model under /models, a served judge, minutes of student training), run end
to end with a tiny plan and the dummy teacher. Paths under /data, /tmp and runs/ are swapped for
files made here; nothing else of the command changes. A command that no rule knows fails the test:
documenting a new command means saying here how it is checked.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from tests.pipeline.conftest import compose
from tests.pipeline.test_store import s3  # noqa: F401  (fixture: the documented object-store command)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands not run here, each with the place that does run it (or why it cannot run here).
ELSEWHERE = {
    "make install": ".ci/run runs it on a clean checkout",
    "make probe": "tests/pipeline/test_probe_*.py run the probe small; the default probe is bench/bench_probe.py",
    "make submit": "tests/pipeline/test_submit.py submits to a local cluster, tests/pipeline/test_multinode.py to two nodes",
    "export RAY_": "the environment of make submit",
    "xdg-open": "opens a desktop browser",
    "chromium --headless": "tests/pipeline/test_report_browser.py screenshots a report with it",
    "litho serve": "tests/generators/teachers/test_serve_openai.py runs it as written and asks it with openai",
    "python pretrain_gpt.py": "Megatron-LM's script (not installed here); tests/pipeline/test_token_files.py "
    "builds megatron-core's GPTDataset from the same blend.json",
    "python -m pipeline.probe.gpu": "tests/pipeline/test_probe_gpu.py trains a pack with it on the CPU",
    "bash bench/gpu_check.sh": "tests/generators/teachers/test_gpu_check.py runs its dry run",
}
PACK = "python -m pipeline.probe.pack"  # composed and checked as the probe command it prepares
# Composed and checked but not run: they need a GPU, a model that is not on this machine, a served
# judge, or minutes of student training.
NOT_RUN = ("teacher.device=cuda", "/models/", "base_url:", "litho probe", "filters/judge=embedded")
# Run end to end (the others are composed and checked: they only change values the runs here cover).
# Each runs in seconds, but a whole run each costs the suite: the kinds no other test runs as written.
RUN = ("thresholds", "generator=rephrase", "litho score", "make dedup", "litho dedup")
# A documented object store: a loopback moto server and bucket stand in, so the check before work
# (the bucket is writable) runs for real; tests/pipeline/test_store.py runs such a command end to end.
STORE = ("s3://bucket/", "endpoint_override=minio:9000&scheme=http")
COMMAND = {"generate": "config", "score": "score", "dedup": "dedup_corpus", "probe": "probe"}


def documented() -> list[tuple[str, str]]:
    """(file name, command line) of every non-comment line of every bash block, comments stripped."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():  # continued lines are one command
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    found.append((path.name, line))
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory, real_texts) -> Path:
    """What the documented paths point at: a seed file, a corpus (Parquet and JSONL), evaluation sets, a
    SentencePiece student tokenizer."""
    root = tmp_path_factory.mktemp("data")
    texts = [" ".join(t.split()[:80]) for t in real_texts[:12]]  # short: the LM scorer runs in seconds
    (root / "corpus").mkdir()
    for i in range(2):
        part = texts[i * 6 : (i + 1) * 6]
        pq.write_table(pa.table({"text": part, "content": part}), root / "corpus" / f"part-{i}.parquet")
    pq.write_table(pa.table({"text": texts[:4]}), root / "seed.parquet")
    # A generated run's rows as docs/probe.md scores them again: each text with its request's messages.
    (root / "own256" / "data").mkdir(parents=True)
    prompts = [json.dumps([{"role": "user", "content": f"Write about {t.split()[0]}."}]) for t in texts[:6]]
    pq.write_table(
        pa.table({"text": texts[:6], "prompt": prompts}), root / "own256" / "data" / "part-0.parquet"
    )
    pq.write_table(pa.table({"text": texts[-2:]}), root / "eval.parquet")
    for name in ("web.jsonl", "corpus.jsonl"):
        (root / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    import sentencepiece as spm  # a student tokenizer for the token-aware commands

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(root / "student"), vocab_size=300, minloglevel=2
    )
    rows = [{"question": t.split(".")[0], "answer": "42"} for t in texts[-2:]]
    (root / "gsm8k_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def localize(args: list[str], data: Path, out: Path, store: str | None = None) -> list[str]:
    """The same overrides with the documented paths pointing at files made here (one pass, so a
    swapped-in path is never swapped again); ``store``, the query of a loopback S3 server, stands in
    for a documented bucket's endpoint."""
    places = {
        "/data/scored": str(out / "scored"),
        "/data/run1": str(out / "run1"),
        "runs/latest": str(out / "run1"),
        "/data/": f"{data}/",
        "/tmp/": f"{out}/",
        "/mnt/shared/": f"{out}/shared/",
        "input=web.jsonl": f"input={data}/web.jsonl",
        "input=corpus.jsonl": f"input={data}/corpus.jsonl",
        "input=corpus/": f"input={data}/corpus/",
        "input=runs/own256/data": f"input={data}/own256/data",
    }
    if store is not None:
        places.update({STORE[0]: "s3://litho-test/", STORE[1]: store})
    pattern = re.compile("|".join(re.escape(k) for k in sorted(places, key=len, reverse=True)))
    return [pattern.sub(lambda m: places[m[0]], arg) for arg in args]


def litho_argv(line: str) -> list[str] | None:
    """``litho COMMAND args...`` for a litho or make-target line; None for anything else."""
    words = shlex.split(line)
    if words[0] == "litho":
        return words[1:]
    if line.startswith(PACK):  # the probe's preparation, packed for a GPU machine
        return ["probe", *[w for w in words[3:] if w != "--fit"]]
    if words[0] == "make" and len(words) >= 2:
        args = [w.partition("=")[2] for w in words[2:] if w.startswith("ARGS=")]
        return [words[1], *(shlex.split(args[0]) if args else [])]
    return None


COMMANDS = documented()


def test_every_documented_command_is_found_and_known():
    assert len(COMMANDS) >= 25, COMMANDS  # the parser still finds the docs' commands
    for name, line in COMMANDS:
        argv = litho_argv(line)
        known = any(line.startswith(prefix) for prefix in ELSEWHERE)
        assert known or (argv and argv[0] in (*COMMAND, "report", "export")), f"{name}: no rule for {line!r}"


def _tiny(command: str, args: list[str], out: Path) -> list[str]:
    extra = [f"output.dir={out / 'run'}"] if not any(a.startswith("output.dir=") for a in args) else []
    if command == "generate":
        args = [a for a in args if not a.startswith("n=")]  # the documented plan size, made tiny
        extra.append("n=4")
        if not any(a.startswith(("teacher=", "teacher.model=")) for a in args):
            extra.append("teacher=dummy")
    if "bits_per_byte" not in " ".join(args):
        extra.append("++filters.lm=null")  # no scorer model to load unless the command selects by it
    return args + extra


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,line", [c for c in COMMANDS if (litho_argv(c[1]) or [""])[0] in COMMAND], ids=lambda v: v[:60]
)
def test_documented_command_works(name, line, data, tmp_path, ray_session, request):
    """A documented command, run as the docs give it on a small plan (4 requests; the dummy teacher unless it
    names one; the LM scorer only where it selects by bits per byte) in this process, on the session's Ray.
    Over 30 s at times in `make test`: the `filters.min_words=80` example took 11.2 s alone, 18.7 s pinned to
    one core (as an xdist worker is), and 39.7 s once in a full run, where the core is shared with that
    worker's Ray processes."""
    from pipeline.cli import check_overrides
    from pipeline.job import Job
    from pipeline.run import run

    command, *args = litho_argv(line)
    if args and args[0].startswith("--"):  # litho COMMAND --cfg job: Hydra prints the config, nothing runs
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", command, *args], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0 and "filters:" in result.stdout, result.stderr[-2000:]
        return
    store = request.getfixturevalue("s3")[1] if STORE[0] in line else None  # a moto server, a bucket
    args = localize(args, data, tmp_path, store)
    assert check_overrides(command, COMMAND[command], args) is None
    if command == "probe":
        from pipeline.probe.run import check

        check(compose(*args, config_name="probe"))
        return
    if any(marker in line for marker in NOT_RUN) or not any(marker in line for marker in RUN):
        cfg = compose(*args, config_name=COMMAND[command])
        if "/models/" in line:  # accepted up to the model it names, which is not on this machine
            with pytest.raises(ConfigError, match="/models/"):
                Job.from_config(cfg, command)
        else:
            Job.from_config(cfg, command)
        return
    cfg = compose(*_tiny(command, args, tmp_path), config_name=COMMAND[command])
    manifest = run(cfg, command)
    assert (
        manifest["counts"]["kept"] + sum(manifest["dropped_by_reason"].values())
        == manifest["counts"]["rows_in"]
    )
    assert (Path(manifest.get("work_dir", manifest["output_dir"])) / "manifest.json").is_file()


@pytest.mark.slow
def test_documented_report_command_rebuilds_a_report(data, tmp_path, ray_session):
    from pipeline.cli import report_command
    from pipeline.run import run

    lines = [line for _, line in COMMANDS if litho_argv(line) and litho_argv(line)[0] == "report"]
    assert lines, "the README shows how to rebuild a report"
    run(compose("teacher=dummy", "n=4", "++filters.lm=null", f"output.dir={tmp_path / 'run1'}"))
    (tmp_path / "run1" / "report.html").unlink()
    for line in lines:
        report_command(localize(litho_argv(line)[1:], data, tmp_path))
        assert (tmp_path / "run1" / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_documented_export_commands_work(data, tmp_path, ray_session):
    """``litho export`` as documented: a litho output (a tiny run stands in for runs/latest) and a corpus."""
    from pipeline.cli import export_command
    from pipeline.run import run

    lines = [line for _, line in COMMANDS if litho_argv(line) and litho_argv(line)[0] == "export"]
    assert len(lines) >= 2, "the docs show litho export for a run and for a corpus"
    run(compose("teacher=dummy", "n=4", "++filters.lm=null", f"output.dir={tmp_path / 'run1'}"))
    for line in lines:
        export_command(localize(litho_argv(line)[1:], data, tmp_path))
    assert list((tmp_path / "run1" / "tokenized" / "megatron").glob("*.idx"))
    assert list((data / "tokens" / "tokenized" / "numpy").glob("*.npy"))
