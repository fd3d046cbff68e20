# The README's commands are these targets. `make test` builds its own venv and starts its own servers.
# Every install path installs the pinned, hashed versions of requirements-dev.lock (the
# Dockerfile: requirements.lock); `make lock` refreshes both from pyproject.toml.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements-dev.lock
# Test processes (pytest-xdist). Most of the suite waits on servers and timers, so three
# processes finish the whole suite on two cores in about 60% of the time one takes.
WORKERS ?= 3
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)
COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--all-build-deps --no-emit-index-url --no-emit-find-links

.PHONY: install lock servers test-servers fault-servers lint test unit integration acceptance demo bench faults clean

install: $(STAMP)

# A changed lock rebuilds the venv from scratch: what is installed is exactly the lock.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# Refresh the locks after editing pyproject.toml's dependencies; pins already in a lock are
# kept unless UPGRADE=--upgrade (or --upgrade-package NAME) is given. It runs pip-compile from
# the venv as it stands (the new dependency is not installed yet: `make install` would fail
# its `pip check`), making one from the current lock if there is none.
lock:
	test -x $(BIN)/pip-compile || { $(PY) -m venv $(VENV) && \
		$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK); }
	$(COMPILE) $(UPGRADE) --extra dev -o requirements-dev.lock pyproject.toml
	$(COMPILE) $(UPGRADE) -o requirements.lock pyproject.toml

lint: install
	$(BIN)/ruff check consumer tests ops
	$(BIN)/ruff format --check consumer tests ops
	$(BIN)/mypy

# redis-server and PostgreSQL: all `make demo` needs. The test suite also runs prometheus and
# promtool (alert rules, a real scrape); it and the fault suite run archivers under libfaketime
# (the clock_skew scenario).
servers:
	bash ops/check-servers.sh

test-servers:
	PYTHON=$(BIN)/python bash ops/check-servers.sh --with-prometheus --with-faketime --with-redis-stack

fault-servers:
	bash ops/check-servers.sh --with-faketime

test: lint test-servers
	$(BIN)/pytest -n $(WORKERS) tests

unit: install
	$(BIN)/pytest tests/unit

integration: install test-servers
	$(BIN)/pytest -n $(WORKERS) tests/integration

acceptance: install servers
	$(BIN)/pytest -n $(WORKERS) tests/acceptance

demo: install servers
	$(BIN)/archiver demo $(DEMO_ARGS)

bench: install servers
	$(BIN)/python -m ops.bench $(BENCH_ARGS)

faults: install fault-servers
	$(BIN)/python -m ops.faults --json faults-results.json $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
