# adplatform — the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: help run test venv deps lint format unit bench monitor clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## create the virtualenv and install the pinned dependencies

run: venv  ## run the whole platform on embedded defaults with demo data
	$(BIN)/adplatform dev

deps: venv  ## install what the tests need: servers, Kafka jars, Helm, CRDs
	scripts/install-test-deps.sh

lint: venv  ## ruff and mypy
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

format: venv  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

test: deps lint  ## install what the tests need, then lint and run every test suite
	$(BIN)/pytest

unit: venv  ## the fast tests only (no servers)
	$(BIN)/pytest tests/unit -q

bench: deps  ## run the benchmarks (prints their figures)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

INSTALL_SYSTEM ?= scripts/install-system.sh

monitor: venv  ## Prometheus + Alertmanager watching adplatform dev (MONITOR_ARGS=--fast: quick alerts)
	@command -v prometheus >/dev/null && { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null \
		|| $(INSTALL_SYSTEM)
	$(BIN)/python scripts/monitor.py $(MONITOR_ARGS)

clean:  ## remove the virtualenv, caches and the embedded database
	rm -rf $(VENV) .cache .adplatform .mypy_cache .ruff_cache .pytest_cache

.PHONY: dashboard
dashboard:  ## rebuild the analytics dashboard bundle (npm) into src/adplatform/analytics/static
	cd src/adplatform/analytics/frontend && npm ci --no-audit --no-fund && npm run build
	@# stamp the bundle with the sources it was built from (tests/unit/analytics checks it)
	cd src/adplatform/analytics/frontend && find . -path ./node_modules -prune -o -type f -print \
	  | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1 > ../static/SOURCES.sha256
