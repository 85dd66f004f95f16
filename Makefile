# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Each does its own set-up first (scripts/setup.sh: fast when nothing changed); `make run`
# installs only what serving needs, `make test` and `make bench` add their extras.
# `make lint`: ruff's checks (pyproject.toml), its formatting, and complexity <= 15 in
# memory_core and app; CI runs it before the tests.
PY := .venv/bin/python
# make bench BENCH=bench_pc ARGS="--threads 1": any scripts/<BENCH>.py with its arguments.
BENCH ?= bench_hopfield
ARGS ?= --sizes 10000 --out results/tmp/bench_hopfield.json

.PHONY: run run-cluster test test-container bench setup lint container-check
run:
	@scripts/setup.sh run
	$(PY) -m app

# The Ray mode on this machine: a head and two worker nodes (ray start, loopback, token auth),
# the service against them on AMS_HOST:AMS_PORT; Ctrl-C stops both (docs/scale.md).
run-cluster:
	@scripts/setup.sh distributed
	$(PY) -m app.cluster.local run

test:
	@scripts/setup.sh test
	$(PY) -m pytest

# The container test (tests/e2e/test_container.py): kept out of `make test`, whose suite
# must stay under 15 minutes, since a machine that never built the image pays ~5 minutes.
test-container:
	@scripts/setup.sh test
	$(PY) -m pytest -m container tests/e2e/test_container.py

bench:
	@scripts/setup.sh bench
	$(PY) scripts/$(BENCH).py $(ARGS)

setup:
	@scripts/setup.sh test

lint:
	@scripts/setup.sh test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The Docker image built and run for real with podman (scripts/container_check.sh):
# results/container.json and the figures of results/container.md.
container-check:
	@scripts/setup.sh test
	scripts/container_check.sh
