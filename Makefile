# ptguard developer commands. `make demo` and `make test` each set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The sandbox FHIR server's npm packages (Medplum 4.5.2): reinstalled only when the lockfile changes.
FHIR_SERVER := sandbox/fhir-server
NPM_STAMP := $(FHIR_SERVER)/node_modules/.ptguard-installed

$(NPM_STAMP): $(FHIR_SERVER)/package.json $(FHIR_SERVER)/package-lock.json
	npm ci --prefix $(FHIR_SERVER) --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

setup: $(STAMP) $(NPM_STAMP)

# The whole sandbox (FHIR server, fixtures, SMART auth, ptguard, EHR simulator); prints the URL to open; Ctrl-C stops.
demo: setup
	$(VENV)/bin/ptguard demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
