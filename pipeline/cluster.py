"""Starting or joining Ray, with the run kept offline unless the user opts in."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

from generators.errors import ConfigError

log = logging.getLogger(__name__)

# Hub look-ups and usage reports off: a run must never reach the network by accident.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


# A quiet terminal (cluster.verbose=false): no model-loading progress bars from inside workers.
# teacher=vllm: vLLM's INFO/WARNING logs and its workers' FutureWarnings stay out of the terminal too.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def offline_env(allow_network: bool) -> dict[str, str]:
    return {} if allow_network else dict(OFFLINE_ENV)


def worker_env(cluster: dict, allow_network: bool) -> dict[str, str]:
    """Environment of the run's workers: offline unless allowed, quiet unless ``cluster.verbose``, and
    Ray Data's batches in flight per task of an async stage (the teacher's) as many as an actor takes."""
    env = offline_env(allow_network) | ({} if cluster.get("verbose", False) else dict(QUIET_ENV))
    in_flight = int(cluster.get("teacher_batches_in_flight") or 0)
    if in_flight:
        env["RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY"] = str(in_flight)
    return env


# Ray Data warnings that every litho run triggers and that mean nothing for it: the teacher and
# scorer actor pools hold the CPUs by design (ray.data "does not have any available CPUs ... will
# hang"), and progress bars are off unless cluster.progress_bars=true; and its duplicate error reports.
BENIGN_RAY_DATA = (
    "does not have any available CPUs",
    "Progress bars disabled",
    # Ray Data's own report of a failed task, traceback included: the exception reaches the driver,
    # which prints it once (a one-line error for the user's mistakes, the traceback otherwise).
    "An exception was raised from a task of operator",
    "Exception occurred in user code",
    "Exception occurred in Ray Data or Ray Core internal code",
    "Full stack trace",
)


AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _not_token_auth_notice(record: logging.LogRecord) -> bool:
    return "Token authentication is enabled" not in record.getMessage()


def _quiet_ray_data(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in BENIGN_RAY_DATA)


# Lines Ray's C++ core worker prints in the driver that are not the user's problem: Ray Data passes
# every actor pool's constructor through the object store and restarts actors (max_restarts=-1), and
# the core worker logs an error line about that combination once per run.
NATIVE_NOISE = re.compile(
    rb"^\[[0-9-]+ [0-9:,]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .*"
    rb"has constructor arguments in the object store and max_restarts > 0"
)


_stderr_was_terminal: bool | None = None  # while stderr is swapped for a pipe: whether it was a terminal


def is_terminal(stream) -> bool:
    """Whether ``stream`` shows on a terminal, also while :func:`native_lines_dropped` filters stderr."""
    if stream is sys.stderr and _stderr_was_terminal is not None:
        return _stderr_was_terminal
    return bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def native_lines_dropped(pattern: re.Pattern) -> Iterator[None]:
    """Drop lines matching ``pattern`` from this process's stderr (file descriptor 2) while inside.

    Ray's native code writes to the descriptor directly, past Python's logging, and offers no switch
    for one message (RAY_BACKEND_LOG_LEVEL silences all and itself announces the change from every
    process), so the descriptor is swapped for a pipe whose reader forwards everything else at once:
    partial lines (a progress bar's carriage returns) pass unbuffered unless they start like a native
    log line, which is held until its newline.
    """
    try:
        sys.stderr.flush()
        target = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no descriptor 2 to swap (an embedded interpreter): nothing to filter
        yield
        return
    global _stderr_was_terminal
    _stderr_was_terminal = os.isatty(2)  # progress bars ask: the pipe is not a terminal, the user's is
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        held = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                held += chunk
                while held:
                    if not held.startswith(b"["):  # not a native log line: pass up to its next line start
                        cut = held.find(b"\n[")
                        out, held = (held, b"") if cut < 0 else (held[: cut + 1], held[cut + 1 :])
                        os.write(target, out)
                        continue
                    end = held.find(b"\n")
                    if end < 0:
                        break  # a native line in pieces: wait for its end
                    line, held = held[: end + 1], held[end + 1 :]
                    if not pattern.match(line):
                        os.write(target, line)
            if held:
                os.write(target, held)
        os.close(target)

    # Daemon: children started inside (Ray's raylet and workers) may hold the pipe until they exit.
    threading.Thread(target=forward, name="litho-stderr", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(target, 2)
        _stderr_was_terminal = None


# Ray kills an idle worker process 1 s after its last task once a node has more workers than CPUs, and a
# run's stages come in waves (a hash shuffle's aggregator actors count as workers too): the next wave
# started new processes, each importing Ray, pyarrow and its stage's modules (~2 s of CPU on 2 cores).
# Measured on 2 CPUs, the star-rounds near dedup of 400 rows: 17-66 s and 13-48 new worker processes
# with Ray's default; 8-10 s and 6-9 processes when idle workers wait 30 s for the next wave.
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 30_000}


@contextlib.contextmanager
def connect(cluster: dict, allow_network: bool = False) -> Iterator[None]:
    """Start a local Ray instance (``mode: local``) or join one (``mode: remote``) for the run."""
    import ray
    from ray.data import DataContext

    env = worker_env(cluster, allow_network)
    os.environ.update(
        offline_env(allow_network)
    )  # the driver keeps its own bars (TQDM_DISABLE is the workers')
    if ray.is_initialized():  # a caller (a test, a notebook) already connected: use it as is
        owned = False
    elif cluster["mode"] == "local":
        if not cluster.get("verbose", False):
            # Ray enables token authentication for a new local instance and warns that it did so.
            logging.getLogger(AUTH_LOGGER).addFilter(_not_token_auth_notice)
        ray.init(
            address="local",  # always a fresh instance, never a `ray start` cluster found on this machine
            num_cpus=cluster.get("num_cpus") or os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=cluster.get("log_to_driver", True),
            runtime_env={"env_vars": env},
            _system_config=LOCAL_SYSTEM_CONFIG,
        )
        owned = True
    elif cluster["mode"] == "remote":
        address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ConfigError("cluster=remote: set RAY_ADDRESS (or cluster.address) to the cluster's address")
        # A job submitted with `ray job submit` brings its own runtime env (see `make submit`).
        ray.init(address=address, logging_level=logging.WARNING)
        owned = True
    else:
        raise ConfigError(f"cluster.mode={cluster['mode']}: use local or remote")
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(cluster.get("progress_bars", False))
    # A teacher or scorer batch may legitimately take hours (a slow teacher, long texts on a CPU):
    # Ray Data's default of aborting after 30 minutes without a finished block would kill the run.
    timeout = cluster.get("no_progress_timeout_s")
    ctx.execution_no_progress_timeout_s = -1 if timeout is None else float(timeout)
    # Ray's default of 200 hash partitions costs seconds per groupby on a laptop-sized run.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ctx.default_hash_shuffle_parallelism = int(cluster.get("shuffle_partitions") or max(2, 2 * cpus))
    if not cluster.get("verbose", False):
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Records of ray.data's child loggers reach only handlers' filters, not the parent logger's.
        for name in ("ray.data", "ray", ""):
            for handler in logging.getLogger(name).handlers:
                if _quiet_ray_data not in handler.filters:
                    handler.addFilter(_quiet_ray_data)
    quiet = contextlib.nullcontext() if cluster.get("verbose", False) else native_lines_dropped(NATIVE_NOISE)
    try:
        with quiet:
            yield
    finally:
        if owned:
            ray.shutdown()
