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


def test_only_the_noise_line_is_dropped(capfd):
    with native_lines_dropped(NATIVE_NOISE):
        os.write(2, b"before\n")
        os.write(2, NOISE[:40])  # a native line written in pieces
        time.sleep(0.1)
        os.write(2, NOISE[40:] + OTHER_NATIVE)
        os.write(2, b"\rteacher:  50%|#####     | 2/4")  # a progress bar: no newline, passes at once
        time.sleep(0.3)
        partial = capfd.readouterr().err
        os.write(2, b"\rteacher: 100%|##########| 4/4\n[not a log line\nafter\n")
        time.sleep(0.3)
    os.write(2, b"restored\n")
    err = partial + capfd.readouterr().err
    assert "\rteacher:  50%|#####     | 2/4" in partial  # not held back until a newline
    assert "has constructor arguments" not in err
    assert err == (
        "before\n"
        + OTHER_NATIVE.decode()
        + "\rteacher:  50%|#####     | 2/4\rteacher: 100%|##########| 4/4\n[not a log line\nafter\nrestored\n"
    )
