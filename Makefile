# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Each does its own set-up first (scripts/setup.sh: fast when nothing changed).
# `make lint`: ruff's checks (pyproject.toml), its formatting, and complexity <= 15 in
# memory_core and app; CI runs it before the tests.
PY := .venv/bin/python

.PHONY: run test setup lint
run:
	@scripts/setup.sh run
	$(PY) -m app

test:
	@scripts/setup.sh test
	$(PY) -m pytest

setup:
	@scripts/setup.sh test

lint:
	@scripts/setup.sh test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
