import os
import subprocess
import sys
from pathlib import Path

import pytest

from generators.teachers.models import ModelSpecError, resolve

ROOT = Path(__file__).resolve().parents[3]


def test_embedded_teacher_is_found_without_importing_its_package():
    path = resolve("embedded:smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.parametrize("spec", ["/no/such/model", "org/some-model"])
def test_missing_model_names_key_and_fix(spec):
    with pytest.raises(ModelSpecError, match=r"^teacher\.model=.*(local model directory|hub ids need)"):
        resolve(spec, "teacher.model")


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        resolve(str(tmp_path), "teacher.model")


def test_hub_id_allowed_only_when_network_opted_in():
    assert resolve("org/some-model", allow_network=True) == "org/some-model"


def _caps(monkeypatch, **flags):
    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **flags})


@pytest.mark.parametrize(
    "flags, want",
    [
        ({"amx_bf16": True, "avx512_bf16": True}, "bfloat16"),
        ({"amx_bf16": False, "avx512_bf16": True}, "bfloat16"),
        ({"avx512_f": True, "avx2": True}, "float32"),  # AVX-512 without BF16: bf16 is emulated, slower
        ({}, "float32"),
    ],
)
def test_auto_dtype_on_cpu_follows_native_bf16_support(monkeypatch, flags, want):
    import torch

    from generators.teachers.models import resolve_dtype

    _caps(monkeypatch, **flags)
    dtype, why = resolve_dtype("auto", "cpu")
    assert dtype == getattr(torch, want)
    assert why.startswith("teacher.dtype=auto on CPU: ")
    assert ("neither amx_bf16 nor avx512_bf16" in why) == (want == "float32")


def test_auto_dtype_is_bf16_on_cuda_and_explicit_dtypes_win(monkeypatch):
    import torch

    from generators.teachers.models import resolve_dtype

    _caps(monkeypatch)  # no bf16 on this "CPU": must not matter for CUDA or an explicit choice
    assert resolve_dtype("auto", "cuda:1")[0] == torch.bfloat16
    assert resolve_dtype("bfloat16", "cpu") == (torch.bfloat16, "teacher.dtype=bfloat16")
    with pytest.raises(ModelSpecError, match=r"^filters\.lm\.dtype=fp8: use one of"):
        resolve_dtype("fp8", "cpu", "filters.lm.dtype")


def test_cpu_flags_come_from_proc_cpuinfo_without_torch_capabilities(monkeypatch):
    import torch

    from generators.teachers.models import cpu_bf16_support

    monkeypatch.delattr(torch.cpu, "get_capabilities")
    native, why = cpu_bf16_support()
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    assert native == ("amx_bf16" in flags or "avx512_bf16" in flags)
    assert "/proc/cpuinfo" in why


def test_the_choice_is_logged_once_per_key_and_reason(tmp_path, caplog, monkeypatch):
    from generators.teachers import models
    from generators.teachers.models import load_causal_lm
    from tests.helpers.random_models import write_random_model

    monkeypatch.setattr(models, "_logged", set())  # as in a fresh process
    model_dir = str(write_random_model(tmp_path, "tiny-llama"))
    with caplog.at_level("INFO", logger="generators.teachers.models"):
        for _ in range(2):
            model, _ = load_causal_lm(model_dir, "filters.lm.model", "cpu", "auto")
    lines = [r.getMessage() for r in caplog.records if "filters.lm.dtype" in r.getMessage()]
    assert len(lines) == 1 and str(model.dtype).replace("torch.", "") in lines[0]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_threads_default_to_the_cores_this_process_may_use():
    """A process pinned to one core (taskset, a container's cpuset, a pytest-xdist worker) gets one
    torch thread, not one per core of the machine: more would wait on each other."""
    code = (
        "import os, torch\n"
        "from generators.teachers.models import set_threads\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "set_threads(0)\n"
        "print(torch.get_num_threads())\n"
    )
    pinned = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert pinned.stdout.split() == ["1"]
    code = code.replace("os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n", "")
    free = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert free.stdout.split() == [str(len(os.sched_getaffinity(0)))]
