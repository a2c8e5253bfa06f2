"""Checks that run in the driver before Ray starts, so bad input fails fast with a one-line message."""

from __future__ import annotations

import uuid
from pathlib import Path

import xxhash
from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from generators.teachers.models import resolve


def writable_dir(path: str, key: str) -> Path:
    """Create ``path`` if needed and prove it is writable; nothing in it is touched."""
    out = Path(path).expanduser().resolve()
    probe = out / f".litho-write-test-{uuid.uuid4().hex[:8]}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{key}={path}: not writable ({exc.strerror}); choose a directory you can write to"
        ) from None
    return out


def missing_key(key: str) -> ConfigError:
    """The error for a ``???`` key of the chosen config left unset."""
    return ConfigError(f"{key}=???: this key has no default; set it, e.g. {key}=VALUE")


def check_missing(cfg: DictConfig, group: str) -> None:
    """Raise :func:`missing_key` for the first ``???`` key of ``cfg[group]``, named from the root."""
    missing = sorted(OmegaConf.missing_keys(cfg[group])) if group in cfg else []
    if missing:
        raise missing_key(f"{group}.{missing[0]}")


def work_dir(cfg: DictConfig) -> tuple[str, str]:
    """``(key, path)`` of the directory a run works in: ``output.dir``, or ``output.work_dir`` when
    ``output.dir`` is an object-store URI (pipeline/output/store.py; default: under ``paths.runs``)."""
    from pipeline.output.store import is_uri

    if not is_uri(cfg.output.dir):
        return "output.dir", str(cfg.output.dir)
    given = cfg.output.get("work_dir")
    if given:
        return "output.work_dir", str(given)
    return "output.work_dir", str(
        Path(str(cfg.paths.runs)) / "store" / xxhash.xxh3_64_hexdigest(str(cfg.output.dir).encode())
    )


def check_common(cfg: DictConfig, tokenizer: bool = True) -> Path:
    """Cluster, tokenizer, output and dedup keys every command uses; returns the directory the run
    works in (the output directory, or for an object-store ``output.dir`` its ``output.work_dir``)."""
    from pipeline.output.store import check_writable, is_uri

    key, work = work_dir(cfg)
    if is_uri(cfg.output.dir):
        check_writable(str(cfg.output.dir))
    if cfg.cluster.mode == "remote" and not Path(work).expanduser().is_absolute():
        # A submitted job runs in a temporary copy of the working dir: relative outputs vanish with it.
        raise ConfigError(
            f"{key}={work}: with cluster=remote give an absolute path on storage the cluster "
            f"shares, e.g. {key}=/mnt/shared/run1"
        )
    spec = cfg.filters.get("tokenizer") if tokenizer else None
    if spec:
        check_tokenizer_spec(spec, "filters.tokenizer", bool(cfg.filters.get("allow_network", False)))
    check_output_and_dedup(cfg)
    return writable_dir(work, key)


def check_tokenizer_spec(spec, key: str, allow_network: bool = False) -> None:
    """A target tokenizer spec names something on this disk (cheap: nothing is loaded).

    A tokenizer-only spec (SentencePiece .model, tokenizer.json or a tokenizer folder) is checked
    where it is loaded (generators/tokenizers.py); model specs are resolved here, before Ray starts.
    """
    path = Path(str(spec)).expanduser()
    tokenizer_only = (
        path.suffix == ".model"
        or path.name == "tokenizer.json"
        or (path.is_dir() and not (path / "config.json").is_file())
    )
    if not tokenizer_only:
        resolve(spec, key, allow_network=allow_network)
    if path.suffix == ".model" and not path.is_file():
        raise ConfigError(f"{key}={spec}: no such SentencePiece model file; give an existing *.model")


def check_output_and_dedup(cfg: DictConfig) -> None:
    """Shard and dedup keys every command uses, checked before any work."""
    fraction = cfg.output.get("validation_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(
            f"output.validation_fraction={fraction}: give a fraction in [0, 1), e.g. 0.05 (0 = no validation split)"
        )
    rows = cfg.output.get("rows_per_shard")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise ConfigError(f"output.rows_per_shard={rows}: give a positive integer")
    minhash = cfg.get("dedup", {}).get("minhash")
    if minhash:
        from filters.dedup.minhash import MinHashConfig

        MinHashConfig.from_dict(OmegaConf.to_container(minhash, resolve=True))


def check_generate(cfg: DictConfig) -> None:
    """``n``, the teacher's sampling and model (first: the target tokenizer defaults to the teacher's model).

    A local teacher's ``teacher.model`` must name a model on this disk; a served one's is free text
    (:func:`check_served_model`).
    """
    n = cfg.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"n={n}: the number of requests must be a positive integer, e.g. n=32")
    from generators.teachers.stream import check_stage_settings

    check_stage_settings(OmegaConf.to_container(cfg.teacher, resolve=True))
    if cfg.teacher.get("sampling") is not None:
        from generators.teachers.contract import SamplingParams

        SamplingParams.from_config(OmegaConf.to_container(cfg.teacher.sampling, resolve=True))
    if cfg.teacher.get("token_aware") is not None:
        from generators.teachers.token_aware import KEY, TokenAware

        aware = TokenAware.from_config(OmegaConf.to_container(cfg.teacher.token_aware, resolve=True))
        if aware.active:
            check_tokenizer_spec(aware.target, f"{KEY}.target", bool(cfg.teacher.get("allow_network", False)))
    if cfg.teacher.get("guided") is not None:  # teacher=openai: how structures are sent
        from generators.teachers.openai import check_guided

        check_guided(cfg.teacher.guided, cfg.teacher.get("structure_retries", 0))
    model = cfg.teacher.get("model")
    if model is None:
        return
    if cfg.teacher.get("base_url") is not None:
        check_served_model(cfg)
        return
    resolve(model, "teacher.model", allow_network=bool(cfg.teacher.get("allow_network", False)))


def check_served_model(cfg: DictConfig) -> None:
    """A teacher behind a server (``teacher.base_url``): ``teacher.model`` is the name the server serves,
    free text that is never looked up on this disk. The target tokenizer must then come from
    ``filters.tokenizer``; it defaults to ``teacher.model``, which works only when the served name
    happens to be a local model spec (a server started on a local path serves it under that path)."""
    model, tokenizer = str(cfg.teacher.model), cfg.filters.get("tokenizer")
    if tokenizer is not None and str(tokenizer) != model:
        return  # set on its own: check_common resolves it
    if tokenizer is not None:
        try:
            resolve(model, "filters.tokenizer", allow_network=bool(cfg.filters.get("allow_network", False)))
            return
        except ConfigError:
            pass
    shown = "null" if tokenizer is None else tokenizer
    raise ConfigError(
        f"filters.tokenizer={shown}: teacher.model={model} is the name the server at teacher.base_url serves, "
        f"not a local model, so it cannot be the target tokenizer; set filters.tokenizer to a local tokenizer "
        f"(a model directory, a .gguf file, a tokenizer.json or embedded:smollm2)"
    )


FORMATS = ("pretrain", "sft")


def check_format(cfg: DictConfig, generator=None) -> None:
    """Output format, shard sizes, packing and the best-of-n expression, before any generation.

    Raises:
        ConfigError: an unknown format, SFT without conversations, a bad size or score expression.
    """
    from pipeline import expression

    output = cfg.output
    fmt = output.get("format", "pretrain")
    if fmt not in FORMATS:
        raise ConfigError(f"output.format={fmt}: use one of {list(FORMATS)}")
    if fmt == "sft" and generator is not None and "messages" not in getattr(generator, "output_columns", ()):
        raise ConfigError(
            f"output=sft needs conversations: use generator=instruct (got generator={generator.name})"
        )
    for key in ("pack_seq_len", "max_shard_bytes"):
        value = output.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"output.{key}={value}: give a positive integer or null")
    if output.get("pack_seq_len") and fmt != "pretrain":
        raise ConfigError(
            "output.pack_seq_len: packing is for output=pretrain; set it to null for output=sft"
        )
    bon = cfg.get("best_of_n")
    if bon is not None and int(bon.n_candidates) > 1:
        expression.parse(bon.score)
    check_token_files(cfg)


def check_token_files(cfg: DictConfig) -> dict | None:
    """``output.token_formats`` and the tokenizer they need (loaded here, in the driver, before Ray): the
    token phase's settings, or None when no token file is asked for."""
    from pipeline.output.tokenized import check_formats, token_settings

    if not check_formats(cfg.output.get("token_formats")):
        return None
    output = OmegaConf.to_container(cfg.output, resolve=True)
    filters = OmegaConf.to_container(cfg.filters, resolve=True) if "filters" in cfg else {}
    sft = output.get("format", "pretrain") == "sft"
    settings = token_settings(output, filters, sft=sft)
    if sft:
        from pipeline.output.sft_tokens import chat_tokenizer

        chat_tokenizer(settings["tokenizer"], settings["allow_network"], settings["cache_dir"])
    return settings
