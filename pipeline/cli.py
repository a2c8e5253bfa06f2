"""The ``litho`` command: ``litho generate|score|dedup|probe [hydra overrides]``, ``litho report [OUT_DIR]``
and ``litho serve [--model ...]`` (generators/teachers/serve.py).

Each subcommand is a Hydra app over its own primary config in conf/, so every Hydra feature
(``--cfg job``, ``--help``, ``-m`` sweeps) works after the subcommand name; ``generate``, ``score``
and ``dedup`` run :func:`pipeline.run.run`, ``probe`` runs :func:`pipeline.probe.run.run_probe`. ``python -m pipeline.cli generate ...`` is the same command without the
installed script (what ``make submit`` runs inside ``ray job submit``).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Callable

from generators.errors import ConfigError

# command -> its primary config in conf/.
COMMANDS = {"generate": "config", "score": "score", "dedup": "dedup_corpus", "probe": "probe"}
USAGE = (
    "usage: litho {generate,score,dedup,probe} [key=value ...]   (litho COMMAND --help for its config)\n"
    "       litho report [OUT_DIR]                                (report.html of an existing output)\n"
    "       litho export SOURCE [key=value ...]                   (token files of a litho output or a corpus)\n"
    "       litho serve [--model SPEC --port N ...]               (a teacher behind an OpenAI-compatible API)"
)


def report_and_exit(work: Callable[[], dict], cfg, table: Callable[[dict], str] | None = None) -> None:
    """Run ``work``; print its summary table (``table``, default the run's), or a one-line error and
    exit 2 on bad input."""
    logging.getLogger().setLevel(logging.INFO)
    try:
        manifest = work()
    except Exception as exc:
        cause = _config_error(exc)
        full = _disk_full(exc) if cause is None else None
        if cause is None and full is None:
            raise
        if full is not None:
            from pathlib import Path

            from pipeline.checkpoint import remove_partial
            from pipeline.validate import work_dir

            # Ray has shut down: a checkpoint group another actor was writing is half a file.
            remove_partial(Path(work_dir(cfg)[1]).expanduser() / ".litho")
            where = f" (writing {full.filename})" if full.filename else ""
            cause = (
                f"output.dir={cfg.output.dir}: no space left on its device{where}; free space (or set output.dir "
                "elsewhere) and rerun: finished teacher batches and the shards published before are kept"
            )
        print(f"litho: error: {cause}", file=sys.stderr)
        sys.exit(2)
    print((table or summary_table)(manifest))


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The ENOSPC behind ``exc`` (raised here or in a Ray task), or None.

    A task's OSError reaches the driver only as text inside Ray's RayTaskError (Ray Data wraps it in
    a UserCodeException without the original), so the remote traceback's last error line is read.
    """
    import errno
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for candidate in (exc, getattr(exc, "cause", None)):
            if isinstance(candidate, OSError) and candidate.errno == errno.ENOSPC:
                return candidate
        remote = re.search(rf"\[Errno {errno.ENOSPC}\] [^:\n]+(?:: '([^'\n]+)')?", str(exc))
        if remote:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), remote[1])
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The user-caused error behind ``exc``, also when hydra's instantiate wrapped it."""
    from omegaconf.errors import MissingMandatoryValue

    while exc is not None:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ConfigError):
            return cause
        # Raised in a Ray task: the driver gets Ray's wrapper, whose text is the remote traceback.
        remote = re.findall(r"generators\.errors\.ConfigError: (.+)", str(exc))
        if remote:
            return ConfigError(remote[-1])
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
    usage = manifest.get("teacher_usage")
    if usage:  # what this run asked of the teacher
        lines.append(f"{'teacher prompt tokens':<28}{usage['prompt_tokens']:>10}")
        lines.append(f"{'teacher completion tokens':<28}{usage['completion_tokens']:>10}")
        if "cost_usd" in usage:
            lines.append(f"{'teacher cost (USD, est.)':<28}{usage['cost_usd']:>10.4f}")
    note = " (unchanged: finished shards kept)" if manifest.get("shards_unchanged") else ""
    lines.append(f"shards: {manifest['output_dir']}/data ({len(manifest['shards'])} files){note}")
    lines.append(
        f"manifest: {manifest['output_dir']}/manifest.json   time: {manifest['timings_s']['total_s']} s"
    )
    if manifest.get("report"):
        lines.append(f"report: {manifest['output_dir']}/{manifest['report']}  (open it in a browser)")
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
        return _missing_option(config_name, overrides, str(exc))
    except ConfigCompositionException as exc:
        text = str(exc)
        if text.startswith("Could not override '"):
            key = text.split("'")[1]
            given = next((o for o in overrides if o.split("=")[0] == key), key)
            known = _known_keys(config_name, [o for o in overrides if o != given])
            close = closest_key(key, known)
            close = None if close == key else close  # the key exists in another option of its group
            value = given.partition("=")[2]
            hint = f"did you mean {close}={value}? " if close else "check the spelling "
            return (
                f"{given}: no such key in the config; {hint}(litho {command} --cfg job prints every key) "
                f"or write +{given} to add a new one"
            )
        return _one_line(text)
    except OverrideParseException as exc:
        return f"bad override syntax: {_one_line(str(exc))} (Hydra's override grammar)"
    return None


def _missing_option(config_name: str, overrides: list[str], text: str) -> str:
    """A config group given an option it does not have: the options, the closest one, and for a path
    given to a group with a ``dir`` key (``output=/data/x``) the key that takes the path."""
    lines = [ln.strip() for ln in text.split("Config search path")[0].splitlines() if ln.strip()]
    given = next((o for o in overrides if f"'{o.split('=')[0].lstrip('+~')}/" in lines[0]), None)
    options = [ln for ln in lines[1:] if not ln.startswith("Available options")]
    if given is None or not options:
        return lines[0]
    group, _, value = given.lstrip("+~").partition("=")
    message = f"{given}: no such config option; use one of {', '.join(options)}"
    if "/" in value or value.startswith((".", "~")):
        if f"{group}.dir" in _known_keys(config_name, [o for o in overrides if o != given]):
            return (
                f"{given}: {group} is a config group ({', '.join(options)}), not a directory; "
                f"write {group}.dir={value}"
            )
    close = difflib.get_close_matches(value, options, n=1)
    return f"{message}; did you mean {group}={close[0]}?" if close else message


def _known_keys(config_name: str, overrides: list[str]) -> set[str]:
    """Every dotted key of the composed config (with ``overrides`` if they compose, else without)."""
    from hydra import compose, initialize_config_module
    from omegaconf import DictConfig, OmegaConf

    cfg = None
    for attempt in (overrides, []):
        try:
            with initialize_config_module(config_module="conf", version_base=None):
                cfg = compose(config_name=config_name, overrides=attempt)
            break
        except Exception:
            continue
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            keys.add(name)
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                walk(child, f"{name}.")

    if cfg is not None:
        OmegaConf.set_struct(cfg, False)
        walk(cfg, "")
    return keys


def closest_key(key: str, known: set[str]) -> str | None:
    """The known key a mistyped ``key`` most likely meant: a key ending in it (a missing prefix), else
    the closest sibling under the same parent, else the closest key overall (difflib)."""
    bare = key.lstrip("+~")
    ends = sorted(k for k in known if k.endswith(f".{bare}"))
    if ends:
        return ends[0]
    parent, _, leaf = bare.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1)
    if close:
        return siblings[close[0]]
    close = difflib.get_close_matches(bare, sorted(known), n=1)
    return close[0] if close else None


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def report_command(argv: list[str]) -> None:
    """``litho report [OUT_DIR]``: build ``report.html`` again for a finished output directory."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="litho report", description="Write report.html into the output directory of a finished run."
    )
    parser.add_argument(
        "out_dir", nargs="?", default="runs/latest", help="output.dir of the run (runs/latest)"
    )
    out = Path(parser.parse_args(argv).out_dir)
    if not (out / "manifest.json").is_file():
        print(
            f"litho: error: {out}: no manifest.json here; give the output.dir of a finished litho generate, "
            "score or dedup run",
            file=sys.stderr,
        )
        sys.exit(2)
    from pipeline.output.report import write_report

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    name = write_report(out, strict=True)
    print(f"report: {(out / name).resolve()}  (open it in a browser)")


def export_command(argv: list[str]) -> None:
    """``litho export SOURCE [key=value ...]`` (pipeline/export.py): one-line errors (exit 2) before Ray, a summary."""
    from pathlib import Path

    from hydra import compose, initialize_config_module

    from pipeline.export import export, summary

    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        print("usage: litho export SOURCE [output.token_formats=[megatron,nanotron,numpy]] [filters.tokenizer=...] "
              "[output.dir=...]   (SOURCE: a litho output or a Parquet/JSONL corpus)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    # token_formats= and append_eos= are short for the output.* keys (the command is about nothing else).
    short = ("token_formats=", "append_eos=")
    overrides = [f"input={argv[0]}", *(f"output.{a}" if a.startswith(short) else a for a in argv[1:])]
    problem = check_overrides("export", "export", overrides)
    if problem:
        print(f"litho: error: {problem}", file=sys.stderr)
        sys.exit(2)
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="export", overrides=overrides)
    given = any(o.split("=")[0].lstrip("+") == "filters.tokenizer" for o in overrides)
    out: list[Path] = []

    def work() -> dict:
        section = export(cfg, given)
        out.append(Path(str(cfg.output.dir or cfg.input)).expanduser().resolve())
        return section

    report_and_exit(work, cfg, lambda section: summary(section, out[0]))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        report_command(argv[1:])
        return
    if argv and argv[0] == "serve":
        from generators.teachers.serve import main as serve

        serve(argv[1:])
        return
    if argv and argv[0] == "export":
        export_command(argv[1:])
        return
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
