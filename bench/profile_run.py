"""Where a dummy-teacher run's driver time and memory go, step by step.

    python bench/profile_run.py N OUTPUT_DIR [overrides...]

Runs ``litho generate`` with ``teacher=dummy filters.lm=null dedup=minhash`` and ``n=N`` on 2 CPUs in
this process, with the driver-side steps of pipeline/run.py wrapped: each prints its seconds, the
driver's peak RSS so far and its RSS now. bench/results/scale.md quotes it (the pipeline's driver at
250-275 MiB from 10k to 300k rows; the run report's share).
"""

from __future__ import annotations

import functools
import json
import sys
import time


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _wrap(module, name: str, label: str | None = None) -> None:
    fn = getattr(module, name)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            print(
                f"[profile] {label or name}: {time.perf_counter() - started:.1f} s, "
                f"driver peak {_status('VmHWM'):.0f} MiB, now {_status('VmRSS'):.0f} MiB",
                flush=True,
            )

    setattr(module, name, timed)


def main() -> None:
    from hydra import compose, initialize_config_module

    import pipeline.near_dedup as near
    from pipeline import aggregate, generate, partition, stages
    from pipeline.output import card, manifest, report, writer
    from pipeline.run import run

    for module, names in (
        (generate, ("to_generate", "generate", "generated")),
        (stages, ("apply",)),
        (partition, ("nonempty",)),
        (near, ("component_labels",)),
        (aggregate, ("summary", "quantiles")),
        (writer, ("publish", "write_shards")),
        (manifest, ("build",)),
        (card, ("write_card",)),
        (report, ("write_report",)),
    ):
        for name in names:
            _wrap(module, name)
    n, out, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    overrides = ["teacher=dummy", "filters.lm=null", "dedup=minhash", f"n={n}", f"output.dir={out}",
                 "cluster.num_cpus=2", *extra]  # fmt: skip
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    started = time.perf_counter()
    result = run(cfg)
    print(f"wall {time.perf_counter() - started:.1f} s; phases {json.dumps(result['timings_s'])}")
    print("stage seconds", {s["name"]: s["seconds"] for s in result["stages"]})
    print(f"driver peak RSS {_status('VmHWM'):.0f} MiB")


if __name__ == "__main__":
    main()
