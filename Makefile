# Two commands: `make run` sets everything up and starts the stack; `make test` runs the tests.
# Both create .venv from scratch when it is missing and re-install when pyproject.toml changes.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CG := $(BIN)/childguard
PYTEST_ARGS ?=

.PHONY: run test setup models lint stop status clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_venv.sh
	touch $(STAMP)

models: setup
	$(CG) models pull

run: setup
	bash scripts/run_stack.sh start

stop:
	bash scripts/run_stack.sh stop

status:
	bash scripts/run_stack.sh status

test: setup
	bash scripts/run_tests.sh $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
