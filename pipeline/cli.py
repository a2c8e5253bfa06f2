"""The ``litho`` command: ``litho generate|score|dedup|probe [hydra overrides]``.

Each subcommand is a Hydra app over its own primary config in conf/, so every Hydra feature
(``--cfg job``, ``--help``, ``-m`` sweeps) works after the subcommand name; ``generate``, ``score``
and ``dedup`` run :func:`pipeline.run.run`, ``probe`` runs :func:`pipeline.probe.run.run_probe`. ``python -m pipeline.cli generate ...`` is the same command without the
installed script (what ``make submit`` runs inside ``ray job submit``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from generators.errors import ConfigError

# command -> its primary config in conf/.
COMMANDS = {"generate": "config", "score": "score", "dedup": "dedup_corpus", "probe": "probe"}
USAGE = "usage: litho {generate,score,dedup,probe} [key=value ...]   (litho COMMAND --help for its config)"


def report_and_exit(work: Callable[[], dict], cfg, table: Callable[[dict], str] | None = None) -> None:
    """Run ``work``; print its summary table (``table``, default the run's), or a one-line error and
    exit 2 on bad input."""
    logging.getLogger().setLevel(logging.INFO)
    try:
        manifest = work()
    except Exception as exc:
        cause = _config_error(exc)
        if cause is None:
            raise
        print(f"litho: error: {cause}", file=sys.stderr)
        sys.exit(2)
    print((table or summary_table)(manifest))


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The user-caused error behind ``exc``, also when hydra's instantiate wrapped it."""
    from omegaconf.errors import MissingMandatoryValue

    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        if isinstance(exc, MissingMandatoryValue):  # a `???` key of the chosen config left unset
            from pipeline.validate import missing_key

            return missing_key(exc.full_key or "a key")
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


def check_overrides(command: str, config_name: str, overrides: list[str]) -> str | None:
    """Compose the config once before Hydra runs the app, so that a bad override gets one line naming
    it and the fix instead of Hydra's multi-line report; ``None`` when the overrides compose."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    # MissingConfigException is a ConfigCompositionException: it is caught first.
    try:
        with initialize_config_module(config_module="conf", version_base=None):
            compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as exc:
        lines = [ln.strip() for ln in str(exc).split("Config search path")[0].splitlines() if ln.strip()]
        group = next((o for o in overrides if f"'{o.split('=')[0]}/" in lines[0]), lines[0])
        options = [ln for ln in lines[1:] if not ln.startswith("Available options")]
        return f"{group}: no such config option; use one of {', '.join(options)}" if options else lines[0]
    except ConfigCompositionException as exc:
        text = str(exc)
        if text.startswith("Could not override '"):
            key = text.split("'")[1]
            given = next((o for o in overrides if o.split("=")[0] == key), key)
            return (
                f"{given}: no such key in the config; check the spelling (litho {command} --cfg job prints "
                f"every key) or write +{given} to add a new one"
            )
        return _one_line(text)
    except OverrideParseException as exc:
        return f"bad override syntax: {_one_line(str(exc))} (Hydra's override grammar)"
    return None


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command = argv.pop(0)
    config_name = COMMANDS[command]

    import hydra

    if not any(a.startswith("-") for a in argv):  # flags (--cfg, --help, -m) are Hydra's to handle
        problem = check_overrides(command, config_name, argv)
        if problem:
            print(f"litho: error: {problem}", file=sys.stderr)
            sys.exit(2)
    if command == "probe":
        from pipeline.probe.report import summary
        from pipeline.probe.run import run_probe

        def work(cfg) -> dict:
            return run_probe(cfg)

        table = summary
    else:
        from pipeline.run import run

        def work(cfg) -> dict:
            return run(cfg, command)

        table = summary_table

    @hydra.main(version_base=None, config_path="../conf", config_name=config_name)
    def app(cfg) -> None:
        report_and_exit(lambda: work(cfg), cfg, table)

    sys.argv = [f"litho {command}", *argv]
    app()


if __name__ == "__main__":
    main()
