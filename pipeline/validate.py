"""Checks that run in the driver before Ray starts, so bad input fails fast with a one-line message."""

from __future__ import annotations

import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from generators.errors import ConfigError
from generators.models import resolve


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


def validate_common(cfg: DictConfig, tokenizer: bool = True) -> Path:
    if cfg.cluster.mode == "remote" and not Path(cfg.output.dir).expanduser().is_absolute():
        # A submitted job runs in a temporary copy of the working dir: relative outputs vanish with it.
        raise ConfigError(
            f"output.dir={cfg.output.dir}: with cluster=remote give an absolute path on storage the cluster "
            "shares, e.g. output.dir=/mnt/shared/run1"
        )
    spec = cfg.filters.get("tokenizer") if tokenizer else None
    path = Path(str(spec)).expanduser()
    # A tokenizer-only spec (SentencePiece .model, tokenizer.json or a tokenizer folder) is checked
    # where it is loaded (filters/tokenizers.py); model specs are resolved here, before Ray starts.
    tokenizer_only = (
        path.suffix == ".model"
        or path.name == "tokenizer.json"
        or (path.is_dir() and not (path / "config.json").is_file())
    )
    if spec and not tokenizer_only:
        resolve(spec, "filters.tokenizer", allow_network=bool(cfg.filters.get("allow_network", False)))
    if spec and path.suffix == ".model" and not path.is_file():
        raise ConfigError(
            f"filters.tokenizer={spec}: no such SentencePiece model file; give an existing *.model"
        )
    check_output_and_dedup(cfg)
    return writable_dir(cfg.output.dir, "output.dir")


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
        from filters.minhash import MinHashConfig

        MinHashConfig.from_dict(OmegaConf.to_container(minhash, resolve=True))


def validate_generate(cfg: DictConfig) -> None:
    n = cfg.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"n={n}: the number of requests must be a positive integer, e.g. n=32")
    if cfg.teacher.get("sampling") is not None:
        from generators.teacher import SamplingParams

        SamplingParams.from_config(OmegaConf.to_container(cfg.teacher.sampling, resolve=True))
    model = cfg.teacher.get("model")
    if model is not None:
        resolve(model, "teacher.model", allow_network=bool(cfg.teacher.get("allow_network", False)))
