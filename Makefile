# cashback-ml: `make run` serves the demo, `make test` is the CI gate.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# tests that run reference libraries in isolated environments (gbstats) call uv this way
export UV_COMMAND := $(UV)
VENV := .venv
BIN := $(VENV)/bin
# OpenMP threads (LightGBM) that spin while waiting burn the other job's core when two run at
# once (pytest -n 2): measured 1.5 s -> 75 s for one training; passive waiting avoids it
export OMP_WAIT_POLICY ?= PASSIVE
STAMP := $(VENV)/.installed

.PHONY: help env services run test lint typecheck pytest notebooks bench lock clean-data

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) venv --quiet --allow-existing --python 3.11 $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

env: $(STAMP)  ## create the virtualenv from the lock file

run: env  ## build the demo data, features and models if absent, then serve the API
	$(BIN)/cashback demo

lint: env  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: env  ## mypy, strict
	$(BIN)/mypy

services:  ## install what the tests run against (redis-server, chromium, postgresql) when missing
	bash scripts/install_services.sh

pytest: env services  ## unit, integration and real-data tests (not the benchmarks)
	$(BIN)/pytest -n 2 --dist loadgroup -m 'not bench and not notebooks' --durations=25

notebooks: env  ## execute the jupytext notebooks on small data
	$(BIN)/pytest -m notebooks -p no:xdist tests/test_notebooks.py

test: lint typecheck notebooks pytest  ## everything CI runs (the main test run last)

bench: env services  ## full benchmarks; figures go to benchmarks/results/
	$(BIN)/pytest tests/benchmarks -m bench -p no:xdist -s

lock:  ## re-resolve dependencies and export the hashed lock file
	$(UV) lock
	$(UV) export --quiet --format requirements-txt --all-groups --no-emit-project -o requirements.lock
	@rm -f uv.lock

clean-data:  ## remove generated data (data/)
	rm -rf data
