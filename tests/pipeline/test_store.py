"""``output.dir`` on an object store: a loopback S3 server (moto), written through pyarrow's filesystems."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.pipeline.conftest import compose
from tests.pipeline.conftest import free_port as _free_port

CONFIG = ("teacher=dummy", "filters.lm=null", "n=30", "output.rows_per_shard=8", "teacher.duplicate_rate=0.2",
          "output.pack_seq_len=64")  # fmt: skip


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free loopback port with one bucket; yields ``(filesystem, uri query)``."""
    pytest.importorskip("moto")
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="test",
                               secret_key="test", region="us-east-1", allow_bucket_creation=True)  # fmt: skip
        fs.create_dir("litho-test")
        yield fs, f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def _store_digests(fs, root: str) -> dict[str, str]:
    import pyarrow.fs as pafs

    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(root) + 1 :]] = hashlib.sha256(f.read()).hexdigest()
    return out


def _local_digests(out: Path) -> dict[str, str]:
    files = [f for d in ("data", "rejected", "packed") for f in sorted((out / d).glob("*.parquet"))]
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.slow
def test_run_publishes_to_s3_and_a_rerun_copies_nothing(ray_session, s3, tmp_path):
    from pipeline.run import run

    fs, query = s3
    uri = f"s3://litho-test/runs/one?{query}"
    manifest = run(compose(*CONFIG, f"output.dir='{uri}'", f"output.work_dir={tmp_path / 'work'}"))
    local = run(compose(*CONFIG, f"output.dir={tmp_path / 'local'}"))
    stored = _store_digests(fs, "litho-test/runs/one")
    assert len(stored) > 4 and stored == _local_digests(tmp_path / "local")
    with fs.open_input_stream("litho-test/runs/one/manifest.json") as f:
        assert b'"kept": ' + str(local["counts"]["kept"]).encode() in f.read()
    assert manifest["output_dir"] == uri and manifest["counts"] == local["counts"]
    for name in ("README.md", "report.html", "report-funnel.png", "config.yaml"):
        assert fs.get_file_info(f"litho-test/runs/one/{name}").size > 0

    stale = "litho-test/runs/one/data/train-00099-of-00100.parquet"  # a shard this run does not have
    with fs.open_output_stream(stale) as f:
        f.write(b"old")
    from pipeline.output.store import publish_to_store

    again = publish_to_store(tmp_path / "work", uri)
    # README.md, report.html, report-funnel.png and config.yaml (not in the manifest); shards kept
    assert again["copied"] == 4 and again["removed"] == 1
    assert _store_digests(fs, "litho-test/runs/one") == stored


def test_unwritable_bucket_is_one_line_before_work(s3, tmp_path):
    from generators.errors import ConfigError
    from pipeline.job import Job

    _, query = s3
    with pytest.raises(ConfigError, match=r"output.dir=s3://no-such-bucket/x\?.*not writable"):
        Job.from_config(compose("teacher=dummy", f"output.dir='s3://no-such-bucket/x?{query}'"))
