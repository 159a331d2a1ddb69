# Symphony — one command surface. `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/lock.txt | cksum | cut -d' ' -f1)
PROTO_SRC := $(wildcard proto/symphony/v1/*.proto)
GEN_DIR := services/core

# Settings of `make run` (override on the command line: make run CLIENTS=64 DURATION=120).
NODES ?= 2
CLIENTS ?= 32
DURATION ?= 60
POLICY ?= symphony
RUN_ARGS ?=

.PHONY: help venv run test lint fmt proto proto-check lock clean

# Each component adds its own targets (bench-*, e2e-*, validate-*) in mk/<component>.mk.
include $(sort $(wildcard mk/*.mk))

help:  ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

$(STAMP): pyproject.toml requirements/lock.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11+ is needed)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## Create the development environment (.venv) from the pinned lock file.

run: $(STAMP)  ## Start the local stack (scheduler + NODES node schedulers, sim engine) and a CLIENTS-user run.
	$(BIN)/symphony run --nodes $(NODES) --clients $(CLIENTS) --duration $(DURATION) --policy $(POLICY) $(RUN_ARGS)

test: $(STAMP)  ## Unit and integration tests, plus the stub freshness check (fault tests: make test-reliability).
	$(MAKE) --no-print-directory proto-check
	$(BIN)/pytest -q --ignore=tests/reliability

lint: $(STAMP)  ## ruff and strict mypy.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)  ## Format the code.
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP)  ## Regenerate the gRPC stubs from proto/.
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) --mypy_out=$(GEN_DIR) --mypy_grpc_out=$(GEN_DIR) \
	  $(PROTO_SRC)

proto-check: $(STAMP)  ## Fail when the committed stubs differ from what proto/ generates.
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=quiet:$$tmp --mypy_grpc_out=quiet:$$tmp $(PROTO_SRC) && \
	for f in $$(cd $$tmp && find . -name '*.py*' | sort); do \
	  cmp -s $$tmp/$$f $(GEN_DIR)/$$f || { echo "error: $(GEN_DIR)/$$f is stale: run 'make proto'"; exit 1; }; \
	done; echo "gRPC stubs are fresh"

lock:  ## Re-pin every dependency (after changing pyproject.toml).
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -vi '^symphony' > requirements/lock.txt
	rm -rf .lockenv

clean:  ## Remove the environment and generated outputs.
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache out
