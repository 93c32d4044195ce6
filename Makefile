# clipline: the Makefile targets are the interface; CI calls the same ones.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= A paper boat drifting down a rain-soaked street at dusk, cinematic
MODEL ?= sora-2
SIZE ?= 1280x720
DURATION ?= 4

.PHONY: install system-deps run up down status test unit component integration e2e lint typecheck format schemas clean

install: $(VENV)/.installed system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,embedded]"
	touch $@

# Debian's docker-compose validates docker-compose.yml without a Docker daemon (tests use it).
system-deps:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq docker-compose >/dev/null; }

# The main job end to end on the embedded stack: start it, run one job, verify the MP4, stop it.
run: install
	$(BIN)/clipline up
	status=0; $(BIN)/clipline submit --wait --verify --model $(MODEL) --size $(SIZE) \
	  --seconds $(DURATION) --prompt "$(PROMPT)" || status=$$?; \
	  [ -n "$(KEEP)" ] || $(BIN)/clipline down; exit $$status

up: install
	$(BIN)/clipline up

down:
	$(BIN)/clipline down

status:
	$(BIN)/clipline status

test: install lint typecheck
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit

component: install
	$(BIN)/pytest -q tests/component

integration: install
	$(BIN)/pytest -q tests/integration

e2e: install
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy .

schemas: install
	$(BIN)/python -m shared.contracts.schema_files

clean:
	-$(BIN)/clipline down
	rm -rf .clipline .mypy_cache .ruff_cache .pytest_cache
