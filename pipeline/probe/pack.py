"""A probe as one file for a GPU machine that has torch and transformers and nothing else of litho's:
the pool as compact token ids, the evaluation sets, the vocabulary, every arm's rows for every seed
and the student's recipe (``pack.json`` and ``pack.npz.zst``, zstd-compressed by pyarrow here, read
by :mod:`pipeline.probe.gpu` there). Built with the probe's own preparation (pipeline/probe/prepare.py),
so the arms are exactly those ``litho probe`` would train.

    python -m pipeline.probe.pack +experiment=probe_gpu output.dir=runs/gpu-pack
    python -m pipeline.probe.pack --fit +experiment=probe_gpu pool=builtin 'halves=[gzip_ratio]' output.dir=runs/gpu-pack

``--fit`` lowers ``budget_tokens`` to the most every arm can fill (repeating its rows at most
``max_repeats`` times) when the pool is too small for the preset, and records the tokens per parameter
that leaves; without it such a pool is a one-line error.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np

from generators.errors import ConfigError

log = logging.getLogger(__name__)
LIMIT = 64 * 2**20  # the GPU machine receives at most 64 MiB of files git ignores


def arrays(p) -> dict[str, np.ndarray]:
    """Flat arrays of a prepared probe: pool ids and offsets, rows per arm x seed, eval documents."""
    dtype = np.uint16 if p.vocab.size <= 2**16 else np.int32
    out = {"pool_ids": p.flat.astype(dtype), "pool_offsets": p.offsets.astype(np.int64)}
    keys = list(p.chosen)
    out["rows"] = np.concatenate([p.chosen[k] for k in keys]).astype(np.int32)
    out["rows_offsets"] = np.concatenate([[0], np.cumsum([len(p.chosen[k]) for k in keys])]).astype(np.int64)
    for name, (docs, _) in p.eval_data.items():
        out[f"eval_{name}_ids"] = np.concatenate(docs).astype(dtype)
        out[f"eval_{name}_offsets"] = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(
            np.int64
        )
    return out


def write(p, out_dir: Path, meta: dict) -> dict:
    """``pack.npz.zst`` and ``pack.json`` in ``out_dir`` (written to temporary names, then renamed)."""
    import pyarrow as pa

    from pipeline.probe.student import parameter_count

    buffer = io.BytesIO()
    np.savez(buffer, **arrays(p))
    raw = buffer.getvalue()
    packed = pa.Codec("zstd", compression_level=19).compress(raw, asbytes=True)
    keys = list(p.chosen)
    params = parameter_count(p.vocab.size, _student(p.student))
    meta = {
        **meta,
        "arms": [a.name for a in p.arm_list],
        "runs": [[arm, seed] for arm, seed in keys],
        "seeds": p.seeds,
        "budget_tokens": p.budget,
        "parameters": params,
        "tokens_per_parameter": round(p.budget / params, 2),
        "student": p.student,
        "vocab": {"size": p.vocab.size, "rare_id": p.vocab.rare_id, "rare_members": p.vocab.rare_members},
        "eval_sets": {name: {"bytes": n, "docs": len(docs)} for name, (docs, n) in p.eval_data.items()},
        "eval_tokens": int(sum(sum(map(len, docs)) for docs, _ in p.eval_data.values())),
        "pool": {"source": p.source, "rows": len(p.pool.texts), "tokens": int(p.tokens.sum())},
        "raw_bytes": len(raw),
        "packed_bytes": len(packed),
    }
    if len(packed) > LIMIT:
        raise ConfigError(
            f"output.dir={out_dir}: the pack is {len(packed) / 2**20:.1f} MiB, over the GPU machine's 64 MiB; "
            "use a smaller pool (builtin.max_chars, pool_rows) or fewer seeds"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("pack.npz.zst", packed), ("pack.json", json.dumps(meta, indent=1).encode())):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out_dir / name)
    return meta


def _student(values: dict):
    from pipeline.probe.student import StudentConfig

    return StudentConfig.from_dict(values)


def build(overrides: list[str], fit: bool = False) -> dict:
    """Compose conf/probe.yaml with ``overrides``, prepare the probe and write its pack."""
    from hydra import compose, initialize_config_module

    from pipeline.probe.prepare import prepare
    from pipeline.probe.run import check

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="probe", overrides=overrides)
    student = check(cfg)
    p = prepare(cfg, student, fit)
    meta = {"budget_wanted": int(cfg.budget_tokens), "overrides": overrides}
    return write(p, Path(str(cfg.output.dir)).expanduser(), meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="lower budget_tokens to what the pool can fill")
    parser.add_argument("overrides", nargs="*", help="litho probe overrides (Hydra syntax)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        meta = build(args.overrides, args.fit)
    except ConfigError as err:
        print(f"pack: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"pack: {len(meta['runs'])} students ({len(meta['arms'])} arms x {meta['seeds']} seeds), "
        f"{meta['budget_tokens']:,} tokens/arm = {meta['tokens_per_parameter']} tokens/parameter of "
        f"{meta['parameters']:,}; pool {meta['pool']['tokens']:,} tokens; eval {meta['eval_tokens']:,} tokens; "
        f"{meta['packed_bytes'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
