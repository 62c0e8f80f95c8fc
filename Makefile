# Quick start: `make demo` (set up + run the demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two installs, each with its own stamp: the demo needs only the runtime extra; tests, lint and the
# docs build install the dev extra (peers, jax, keras, mkdocs, ...) on top of it.
STAMP_RUNTIME := $(VENV)/.cosanneal-runtime
STAMP_DEV := $(VENV)/.cosanneal-dev

.PHONY: setup setup-runtime demo test lint docs bench clean

setup: $(STAMP_DEV)

setup-runtime: $(STAMP_RUNTIME)

# torch is pinned and installed first, so no unpinned torch (and no CUDA wheels) is ever resolved.
$(STAMP_RUNTIME): pyproject.toml constraints-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints-ci.txt -e '.[runtime]'
	touch $(STAMP_RUNTIME)

# timm is installed without its dependencies: only its scheduler files are used (as a peer, in tests).
$(STAMP_DEV): $(STAMP_RUNTIME)
	$(BIN)/python -m pip install -q --no-deps timm==1.0.31
	$(BIN)/python -m pip install -q -c constraints-ci.txt -e '.[dev]'
	touch $(STAMP_DEV)

demo: $(STAMP_RUNTIME)
	$(BIN)/cosanneal demo --run-dir runs/demo

# The slow multi-process tests (real launchers, servers, 2-4 ranks; marked `slow`) run in a step of
# their own after the rest, with a time budget: 300 s a test, 20 min for the step.
SLOW_BUDGET ?= 1200
test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -n 2 --durations=25 -m "not slow" tests src/cosanneal
	timeout --signal=INT $(SLOW_BUDGET) $(BIN)/python -m pytest -q -n 2 --durations=10 --timeout=300 -m slow tests

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks scripts examples docs/tooling
	$(BIN)/ruff format --check src tests benchmarks scripts examples docs/tooling
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/docs docs/tooling
	$(BIN)/lint-imports

# The guide and the API reference generated from the docstrings (mkdocs.yml); --strict fails on a
# broken link or a docstring griffe cannot parse.
docs: $(STAMP_DEV)
	$(BIN)/mkdocs build --strict -d site

bench: $(STAMP_DEV)
	$(BIN)/python -m pip install -q pytorch-lightning==2.6.6
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_telemetry.py
	$(BIN)/python benchmarks/bench_runtime.py
	$(BIN)/python benchmarks/bench_gpu_telemetry.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info site
