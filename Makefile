# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Each does its own set-up first (scripts/setup.sh: fast when nothing changed).
PY := .venv/bin/python

.PHONY: run test setup
run:
	@scripts/setup.sh run
	$(PY) -m app

test:
	@scripts/setup.sh test
	$(PY) -m pytest

setup:
	@scripts/setup.sh test
