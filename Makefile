# mlgate developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV ?= $(shell command -v uv 2>/dev/null || echo $(BIN)/uv)
# uv verifies TLS with the system's certificates (works behind corporate TLS inspection too).
export UV_SYSTEM_CERTS := 1
# Resolution is frozen at this date, against a fresh index (--refresh: a cached index page can
# miss releases made before the date), so that regenerating the lock is reproducible
# (tests/unit/test_lock.py checks the locks against pyproject.toml).
LOCK_DATE := 2026-11-20T00:00:00Z
# `make lock LOCK_OUT=DIR/` writes the locks into DIR instead (the staleness test does).
LOCK_OUT ?=
LOCK_FLAGS := --refresh --universal --python-version 3.11 --generate-hashes --exclude-newer $(LOCK_DATE) --quiet

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8

.PHONY: install
install: $(BIN)/python ## Install the dev lock and mlgate (editable) into .venv
	$(UV) pip sync --python $(BIN)/python --require-hashes --compile-bytecode requirements-dev.lock
	$(UV) pip install --python $(BIN)/python --no-deps --editable .
	$(BIN)/python -m compileall -q -j 0 src

.PHONY: lock
lock: $(BIN)/python ## Regenerate requirements.lock and requirements-dev.lock from pyproject.toml
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) --custom-compile-command 'make lock' -o $(LOCK_OUT)requirements.lock
	$(UV) pip compile pyproject.toml --extra test $(LOCK_FLAGS) --custom-compile-command 'make lock' -o $(LOCK_OUT)requirements-dev.lock
	$(UV) pip compile requirements-serve.in $(LOCK_FLAGS) --custom-compile-command 'make lock' -o $(LOCK_OUT)requirements-serve.lock
	$(UV) pip compile .github/actions/setup/uv-requirements.in $(LOCK_FLAGS) --custom-compile-command 'make lock' -o $(or $(LOCK_OUT),.github/actions/setup/)uv-requirements.txt

.PHONY: demo
demo: install ## Run the whole pipeline on the embedded defaults (local MLflow, local DVC remote, shipped data); APPROVE=1 deploys
	$(BIN)/mlgate demo $(if $(APPROVE),--approve)

.PHONY: bench
bench: install ## Benchmarks against the alternatives, side by side (QUICK=1: a few minutes; ONLY=serve,gate: some groups)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

.PHONY: test
test: install ## Run the whole test suite (unit, then integration, then workflows with act)
	$(BIN)/python -m pytest

.PHONY: test-unit
test-unit: install ## Run the fast unit tests only
	$(BIN)/python -m pytest -m 'not integration and not workflow'

.PHONY: docs
docs: install ## Build the docs site into site/ (mkdocs build --strict: a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: docs-serve
docs-serve: install ## Preview the docs site at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000
