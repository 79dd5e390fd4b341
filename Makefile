# The two commands of the README: `make run` (set up + run the pipeline on the default data) and
# `make test` (set up + run the tests). Both create .venv in the repo; nothing else needs installing.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do command -v $$p >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup test-debs run repro test test-fast lint ui bench clean

# A linked .venv (a scratch clone or worktree borrowing another checkout's venv) is that checkout's to install:
# installing from here would repoint its editable medflow at this folder.
ifeq ($(shell test -L $(VENV) && echo linked),linked)
setup:
else
setup: $(STAMP)
endif
	@# Where PYTHONDONTWRITEBYTECODE is set (CI images, containers) every run would compile medflow again (~1 s).
	@$(BIN)/python -m compileall -q src flows bench >/dev/null

# torch goes in first and on its own: with a GPU, PyPI's CUDA build; without one, the CPU build (`+cpu`: a
# local wheel where the machine has one, else PyTorch's CPU index). Everything after finds torch satisfied.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if nvidia-smi -L >/dev/null 2>&1; then $(BIN)/pip install -q $(TORCH); \
	  else $(BIN)/pip install -q $(TORCH)+cpu || $(BIN)/pip install -q --extra-index-url $(TORCH_CPU_INDEX) $(TORCH)+cpu; fi; \
	fi
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,server]'
	touch $@

run: setup
	$(BIN)/medflow run

repro: setup
	$(BIN)/medflow data
	$(BIN)/dvc repro

# Debian packages the tests drive: Chromium for the registry UI test, Caddy for the team stack's TLS
# (tests/test_team_stack.py). apt-get update only when one is missing.
TEST_DEBS := chromium chromium-driver caddy
test-debs:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing $$missing (apt-get)"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi

test: setup test-debs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# For ourselves, between edits (< 3 min on 2 cores): the unit tests and one shrunk run of the real executable.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m 'smoke or not (e2e or slow or gpu or full)'

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

UI_PORT ?= 5000
ui: setup
	$(BIN)/medflow ui --port $(UI_PORT)

# Every benchmark of bench/README.md, each writing bench/results/<name>.json (13-21 min on 2 cores).
BENCH := cold_start evaluate_bootstrap survival_metrics logging_overhead train_vs_bare train_vs_seed validate_throughput scaling pipeline tree_baseline sequence_grid
bench: setup
	set -e; for b in $(BENCH); do $(BIN)/python bench/$$b.py; done
	$(BIN)/python bench/pipeline.py --long
	$(BIN)/python bench/report.py

clean:
	rm -rf artifacts .prefect
