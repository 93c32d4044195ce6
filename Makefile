# clipline: the Makefile targets are the interface; CI calls the same ones.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= A paper boat drifting down a rain-soaked street at dusk, cinematic
# Empty: the request's own defaults (JobRequestV1 in shared/contracts/requests.py: sora-2,
# 720x1280, 4 s), which `clipline submit` uses too. `make run SIZE=1280x720` overrides one.
MODEL ?=
SIZE ?=
DURATION ?=
# `make run OBSERVE=1` / `make up OBSERVE=1`: the stack with Prometheus and Phoenix (`make observe`).
OBSERVE ?=
BENCH_SECONDS ?= 8
BENCH_JOBS ?= 1000
BENCH_RPM ?= 600
BENCH_MINUTES ?= 3
BENCH_FOLLOW_JOBS ?= 120
BENCH_GENERATION_SECONDS ?= 20
BENCH_INFLIGHT_JOBS ?= 10000
BENCH_INFLIGHT_GENERATION_SECONDS ?= 600
BENCH_STORAGE_BYTES ?= 1073741824
BENCH_STORAGE_JOBS ?= 300
BENCH_E2E_JOBS ?= 1000
BENCH_CONSUME_MESSAGES ?= 3000
BENCH_DURABILITY_JOBS ?= 500
# `make chaos`: the chaos suite at full size (tests/chaos; `python -m tests.chaos --help`).
CHAOS_JOBS ?= 500
CHAOS_NATS_CLUSTER ?= 3
CHAOS_ARGS ?=
# tests/sdk runs twice: with the openai SDK pinned in pyproject (the latest, multipart create) and
# with this 2.x release (JSON create), installed beside the venv and put first on PYTHONPATH.
OPENAI_LEGACY := 2.14.0
SDK_LEGACY := $(VENV)/sdk/openai-$(OPENAI_LEGACY)
SDK_LEGACY_PYTEST = PYTHONPATH=$(SDK_LEGACY) CLIPLINE_EXPECT_OPENAI=$(OPENAI_LEGACY) \
  $(BIN)/pytest -q tests/sdk
# Arize Phoenix, the trace UI of `clipline up --observe`: ~480 MB of dependencies of its own, so it
# lives in a venv of its own (nothing in it meets the services' pins) and the base install stays
# small. clipline/observe.py finds it there.
OBSERVE_VENV := .venv-observe
PHOENIX_VERSION := 20.26.1

.PHONY: install system-deps observe run up down status test unit component integration e2e sdk bench chaos lint typecheck format schemas clean

install: $(VENV)/.installed $(SDK_LEGACY)/.installed system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,embedded]"
	touch $@

# --no-deps: everything 2.x needs is already in the venv (httpx, pydantic, anyio, jiter, sniffio,
# typing-extensions) except distro and tqdm, which come along pinned. The import proves it works.
$(SDK_LEGACY)/.installed: | $(VENV)/.installed
	rm -rf $(SDK_LEGACY)
	$(BIN)/python -m pip install -q --no-deps --target $(SDK_LEGACY) \
	  openai==$(OPENAI_LEGACY) distro==1.9.0 tqdm==4.70.1
	PYTHONPATH=$(SDK_LEGACY) $(BIN)/python -c \
	  'import openai; assert openai.__version__ == "$(OPENAI_LEGACY)", openai.__version__'
	touch $@

# `clipline up --observe`'s trace UI (Prometheus comes from system-deps).
observe: $(OBSERVE_VENV)/.installed

$(OBSERVE_VENV)/.installed:
	$(PYTHON) -m venv $(OBSERVE_VENV)
	$(OBSERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(OBSERVE_VENV)/bin/python -m pip install -q arize-phoenix==$(PHOENIX_VERSION)
	test -x $(OBSERVE_VENV)/bin/arize-phoenix
	touch $@

# Debian's docker-compose validates docker-compose.yml without a Docker daemon (tests use it);
# iproute2's `ss` shows a test how far storage's upload to S3 has got (tests/e2e/test_storage_kill);
# openssl makes the embedded SeaweedFS's TLS keys for its gRPC ports (clipline/seaweed_security.py);
# prometheus (and its promtool) is `clipline up --observe`'s metrics store and rule checker;
# chromium opens the trace and graph pages in tests/e2e/test_observe.py.
system-deps:
	@{ command -v docker-compose && command -v ss && command -v openssl && command -v prometheus \
	  && command -v promtool && command -v chromium; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq docker-compose iproute2 openssl chromium >/dev/null \
	  && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The main job end to end on the embedded stack: start it, run one job, verify the MP4, stop it.
run: install $(if $(OBSERVE),observe)
	$(BIN)/clipline up $(if $(OBSERVE),--observe)
	status=0; $(BIN)/clipline submit --wait --verify $(if $(MODEL),--model $(MODEL)) \
	  $(if $(SIZE),--size $(SIZE)) $(if $(DURATION),--seconds $(DURATION)) \
	  --prompt "$(PROMPT)" || status=$$?; \
	  [ -n "$(KEEP)" ] || $(BIN)/clipline down; exit $$status

up: install $(if $(OBSERVE),observe)
	$(BIN)/clipline up $(if $(OBSERVE),--observe)

down:
	$(BIN)/clipline down

status:
	$(BIN)/clipline status

# Everything under the latest SDK, then tests/sdk again under the 2.x one; all always run.
# The suite runs as two pytest processes at once (the machine has two cores): the stacks' tests
# (e2e, security, sdk), which mostly wait on processes and timers, and beside them the in-process
# ones (unit, component, integration) followed by the NATS cluster's test (tests/cluster: its own
# 3-node stack, about a minute) and the chaos suite at its small size (CHAOS_TESTS, a few
# minutes), whose output follows once both are done (.pytest-inprocess.log). Phoenix
# (`make observe`), which only tests/e2e/test_observe.py needs (it opens a trace's page),
# installs meanwhile (.venv-observe.log); that test runs last.
OBSERVE_TEST := tests/e2e/test_observe.py
INPROCESS_TESTS := tests/unit tests/component tests/integration tests/cluster
CHAOS_TESTS := tests/chaos/test_chaos.py
STACK_TESTS := tests/e2e tests/security tests/sdk
test: install
	@$(MAKE) -s observe > $(OBSERVE_VENV).log 2>&1 & observing=$$!; \
	  status=0; $(MAKE) -s lint typecheck || status=$$?; \
	  $(BIN)/pytest -q -p no:cacheprovider $(INPROCESS_TESTS) $(CHAOS_TESTS) \
	    > .pytest-inprocess.log 2>&1 & \
	  inprocess=$$!; \
	  $(BIN)/pytest -q $(STACK_TESTS) --ignore=$(OBSERVE_TEST) || status=$$?; \
	  wait $$inprocess || status=1; echo "--- $(INPROCESS_TESTS) $(CHAOS_TESTS):"; \
	  cat .pytest-inprocess.log; \
	  wait $$observing || { status=1; echo "make observe failed:"; tail -20 $(OBSERVE_VENV).log; }; \
	  $(BIN)/pytest -q $(OBSERVE_TEST) || status=$$?; \
	  $(SDK_LEGACY_PYTEST) || status=$$?; exit $$status

unit: install
	$(BIN)/pytest -q tests/unit

component: install
	$(BIN)/pytest -q tests/component

integration: install
	$(BIN)/pytest -q tests/integration

e2e: install observe
	$(BIN)/pytest -q tests/e2e

# The openai-SDK suite alone, under both SDKs.
sdk: install
	status=0; $(BIN)/pytest -q tests/sdk || status=$$?; \
	  $(SDK_LEGACY_PYTEST) || status=$$?; exit $$status

# Speed goals live here, not in tests: figures and ratios against a baseline measured in the same run.
bench: install
	$(BIN)/python -m bench.simulator $(BENCH_SECONDS)
	$(BIN)/python -m bench.admission $(BENCH_JOBS)
	$(BIN)/python -m bench.rate_limit $(BENCH_RPM) $(BENCH_MINUTES)
	$(BIN)/python -m bench.follow_up $(BENCH_FOLLOW_JOBS) $(BENCH_GENERATION_SECONDS)
	$(BIN)/python -m bench.inflight $(BENCH_INFLIGHT_JOBS) $(BENCH_INFLIGHT_GENERATION_SECONDS)
	$(BIN)/python -m bench.storage_stream $(BENCH_STORAGE_BYTES)
	$(BIN)/python -m bench.storage_cpu $(BENCH_STORAGE_JOBS)
	$(BIN)/python -m bench.faults $(BENCH_FAULT_JOBS) $(BENCH_FAULT_GENERATION_SECONDS)
	$(BIN)/python -m bench.consume $(BENCH_CONSUME_MESSAGES)
	$(BIN)/python -m bench.e2e $(BENCH_E2E_JOBS)
	$(BIN)/python -m bench.durability $(BENCH_DURABILITY_JOBS)

# Faults together while 500 jobs a scenario run (tests/chaos): prints the per-scenario table;
# fails on a lost job, a duplicate create or terminal event, a spend mismatch, an overshoot.
chaos: install
	$(BIN)/python -m tests.chaos --jobs $(CHAOS_JOBS) --nats-cluster $(CHAOS_NATS_CLUSTER) $(CHAOS_ARGS)

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
	$(BIN)/python -m clipline.docs

clean:
	-$(BIN)/clipline down
	rm -rf .clipline .mypy_cache .ruff_cache .pytest_cache .hypothesis
