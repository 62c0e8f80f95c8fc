# Quick start: `make demo` (set up + run the demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cosanneal-installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch is pinned and installed first, so no unpinned torch (and no CUDA wheels) is ever resolved.
# timm is installed without its dependencies: only its scheduler files are used (as a peer, in tests).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps timm==1.0.31
	$(BIN)/python -m pip install -q -c constraints-ci.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/cosanneal demo --run-dir runs/demo

test: setup
	$(BIN)/python -m pytest -q -n 2 --durations=25 tests src/cosanneal

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m pip install -q pytorch-lightning==2.6.6
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_telemetry.py
	$(BIN)/python benchmarks/bench_runtime.py
	$(BIN)/python benchmarks/bench_gpu_telemetry.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
