"""The machine a benchmark ran on, for its header: every bench prints the CPU (they differ between hosts)."""

from __future__ import annotations

import subprocess


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (e.g. ``AMD EPYC``), ``?`` where it says none."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
