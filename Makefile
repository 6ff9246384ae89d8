# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv from the lock.
# While working: `make test-fast` (no lint, no test marked slow) and `make lint`.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-hubspot-crm lint fmt sandbox check-config bench clean services

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (none found on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/trellis run

sandbox: $(STAMP)
	$(BIN)/trellis sandbox

check-config: $(STAMP)
	$(BIN)/trellis check-config

lint: $(STAMP)
	$(BIN)/ruff check gateway system_apis process_apis experience_apis tests bench
	$(BIN)/mypy gateway system_apis process_apis experience_apis
	$(BIN)/lint-imports

# pytest-xdist workers, one per core by default (docs/performance.md, "Test suite");
# WORKERS=0 runs every test in this one process. Tests are spread one by one (`--dist load`).
WORKERS ?= auto

# The real stores the tests use: the machine's Redis and PostgreSQL when they answer on
# loopback, else installed and started by these scripts (the test role and database created),
# and Chromium for the browser tests.
services:
	@bash .ci/start_redis.sh
	@bash .ci/start_postgres.sh
	@bash tests/docs/ensure_chromium.sh

# Lint, then every test, then the CRM-dependent suites again on HubSpot: what CI runs (.ci/run).
test: $(STAMP) lint services
	$(BIN)/pytest -n $(WORKERS) $(PYTEST_ARGS)
	$(MAKE) test-hubspot-crm

# The suites that depend on the CRM, unchanged, with the crm instance on the hubspot-crm
# connector and its sandbox (tests/crm_swap.py); Salesforce's own contract tests are skipped.
CRM_SUITES := tests/process tests/experience tests/events tests/faults \
	tests/observability/test_gateway_trace.py tests/security/test_json_bodies.py \
	tests/docs/test_generated_client.py tests/gateway/test_instance_errors.py \
	tests/system/test_vendor_neutral.py
test-hubspot-crm: $(STAMP)
	TRELLIS_TEST_CRM=hubspot-crm $(BIN)/pytest -n $(WORKERS) $(PYTEST_ARGS) $(CRM_SUITES)

# Unit and in-process tests only: what is marked `slow` (pyproject's markers) is left out.
test-fast: $(STAMP)
	$(BIN)/pytest -n $(WORKERS) -m "not slow" $(PYTEST_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format gateway system_apis process_apis experience_apis tests
	$(BIN)/ruff check --fix gateway system_apis process_apis experience_apis tests

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

# Benchmarks against references in one run (bench/run.py); wrk and nginx are used when present.
bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || echo "wrk not found: using the Python load generator (apt-get install -y wrk nginx-light)"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
