"""A quiet terminal: Ray's native noise line is dropped from stderr, everything else passes intact."""

from __future__ import annotations

import os
import time

from pipeline.cluster import NATIVE_NOISE, native_lines_dropped

NOISE = (
    b"[2026-12-01 12:36:59,948 E 13324 13324] core_worker.cc:2465: Actor with class name: "
    b"'MapWorker(MapBatches(GenerateStage))' and ID: '3d8c' has constructor arguments in the object store "
    b"and max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor "
    b"restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details.\n"
)
OTHER_NATIVE = (
    b"[2026-12-01 12:37:00,001 E 13324 13324] core_worker.cc:1200: Failed to connect to the raylet.\n"
)


def _read_until(capfd, needle: str, seconds: float = 10.0) -> str:
    """stderr captured so far, read until it holds ``needle`` (the filter's thread passes it on), at most
    ``seconds``: a bound on a condition, not a sleep, so a loaded machine does not fail the test."""
    seen, deadline = "", time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
        seen += capfd.readouterr().err
    return seen


def test_only_the_noise_line_is_dropped(capfd):
    with native_lines_dropped(NATIVE_NOISE):
        os.write(2, b"before\n")
        os.write(2, NOISE[:40])  # a native line written in pieces
        time.sleep(0.1)
        os.write(2, NOISE[40:] + OTHER_NATIVE)
        os.write(2, b"\rteacher:  50%|#####     | 2/4")  # a progress bar: no newline, passes at once
        partial = _read_until(capfd, "2/4")
        os.write(2, b"\rteacher: 100%|##########| 4/4\n[not a log line\nafter\n")
        rest = _read_until(capfd, "after\n")
    os.write(2, b"restored\n")
    err = partial + rest + capfd.readouterr().err
    assert "\rteacher:  50%|#####     | 2/4" in partial  # not held back until a newline
    assert "has constructor arguments" not in err
    assert err == (
        "before\n"
        + OTHER_NATIVE.decode()
        + "\rteacher:  50%|#####     | 2/4\rteacher: 100%|##########| 4/4\n[not a log line\nafter\nrestored\n"
    )
