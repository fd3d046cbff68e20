# The README's commands are these targets. `make test` builds its own venv and starts its own servers.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install servers lint test unit integration acceptance demo bench faults clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

lint: install
	$(BIN)/ruff check consumer tests ops
	$(BIN)/ruff format --check consumer tests ops
	$(BIN)/mypy

servers:
	bash ops/check-servers.sh

test: lint servers
	$(BIN)/pytest tests

unit: install
	$(BIN)/pytest tests/unit

integration: install servers
	$(BIN)/pytest tests/integration

acceptance: install servers
	$(BIN)/pytest tests/acceptance

demo: install servers
	$(BIN)/archiver demo

bench: install servers
	$(BIN)/python -m ops.bench $(BENCH_ARGS)

faults: install servers
	$(BIN)/python -m ops.faults --json faults-results.json $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
