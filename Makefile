# pgqueue: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install the project with its extras and dev tools (.[dev])

.PHONY: run
run: $(STAMP) ## start Postgres (embedded unless DATABASE_URL), migrate, the API and a worker
	$(BIN)/python -m service run

.PHONY: worker
worker: $(STAMP) ## run one storyboard worker against DATABASE_URL (required)
	$(BIN)/python -m service worker

.PHONY: migrate
migrate: $(STAMP) ## apply migrations to DATABASE_URL (pgqueue's schema and the service's)
	$(BIN)/python -m alembic upgrade head

.PHONY: system-deps
system-deps: ## install the Debian packages the tests drive when missing (pgbouncer, iproute2, chromium, pg_auto_failover; as root)
	@tools/system-deps.sh

.PHONY: test
test: $(STAMP) system-deps ## run the whole suite against a real Postgres (see README)
	$(BIN)/python -m pytest -q

.PHONY: test-embedded
test-embedded: $(STAMP) system-deps ## run the suite on the embedded server even when one runs on :5432
	PGQUEUE_TEST_EMBEDDED=1 $(BIN)/python -m pytest -q

.PHONY: screenshots
screenshots: $(STAMP) system-deps ## run the browser tests (studio, dashboard), keeping their screenshots in docs/screenshots/*.png
	STUDIO_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/browser/test_studio.py tests/browser/test_dashboard.py

.PHONY: bench
bench: $(STAMP) ## run the benchmarks and print their figures
	$(BIN)/python -m bench

.PHONY: lint
lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: fmt
fmt: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: typecheck
typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

.PHONY: check
check: lint typecheck test ## everything CI should pass

.PHONY: clean
clean: ## remove caches and test data (keeps .venv and .pgdata)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .pgdata-test
