"""The ``litho`` command: ``litho generate|score|dedup [hydra overrides]``.

Each subcommand is a Hydra app over its own primary config in conf/, so every Hydra feature
(``--cfg job``, ``--help``, ``-m`` sweeps) works after the subcommand name.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from generators.errors import ConfigError

COMMANDS = {
    "generate": ("config", "pipeline.run:run"),
    "score": ("score", "pipeline.score:run"),
    "dedup": ("dedup_corpus", "pipeline.dedup:run"),
}
USAGE = "usage: litho {generate,score,dedup} [key=value ...]   (litho COMMAND --help for its config)"


def report_and_exit(work: Callable[[], dict], cfg) -> None:
    """Run ``work``; print the summary table, or a one-line error and exit 2 on bad input."""
    logging.getLogger().setLevel(logging.INFO)
    try:
        manifest = work()
    except Exception as exc:
        cause = _config_error(exc)
        if cause is None:
            raise
        print(f"litho: error: {cause}", file=sys.stderr)
        sys.exit(2)
    print(summary_table(manifest))


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The user-caused error behind ``exc``, also when hydra's instantiate wrapped it."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def summary_table(manifest: dict) -> str:
    counts = manifest["counts"]
    lines = [f"{'stage':<28}{'rows':>10}"]
    for key in ("planned", "reused", "generated", "teacher_errors", "rows_in"):
        if key in counts:
            lines.append(f"{key:<28}{counts[key]:>10}")
    for reason, n in manifest["dropped_by_reason"].items():
        lines.append(f"{'dropped: ' + reason:<28}{n:>10}")
    lines.append(f"{'kept':<28}{counts['kept']:>10}")
    tokens = manifest["tokens"]
    lines.append(f"{'kept tokens (target tok.)':<28}{tokens['kept_target_tokens']:>10}")
    note = " (unchanged: finished shards kept)" if manifest.get("shards_unchanged") else ""
    lines.append(f"shards: {manifest['output_dir']}/data ({len(manifest['shards'])} files){note}")
    lines.append(
        f"manifest: {manifest['output_dir']}/manifest.json   time: {manifest['timings_s']['total_s']} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command = argv.pop(0)
    config_name, target = COMMANDS[command]
    module_name, func_name = target.split(":")

    import importlib

    import hydra

    work = getattr(importlib.import_module(module_name), func_name)

    @hydra.main(version_base=None, config_path="../conf", config_name=config_name)
    def app(cfg) -> None:
        report_and_exit(lambda: work(cfg), cfg)

    sys.argv = [f"litho {command}", *argv]
    app()


if __name__ == "__main__":
    main()
