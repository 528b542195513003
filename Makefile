# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
MNIST_DIR ?= ../shared/data/mnist
RUNS ?= runs

.PHONY: serve test soak lint audit default-model results results-table clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

# Serves the embedded default model (models/mnist/2; models/mnist/1 beside it) on port 8000; MIMO_* variables configure it.
serve: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu]'
	$(BIN)/python -m service

# Also installs (apt-get, when it may) the programs the tests drive: Prometheus, Chromium.
test: $(BIN)/python
	bash .ci/system-deps
	$(BIN)/pip install --quiet -e '.[cpu,train,dev]'
	$(BIN)/ruff check .
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest -q

# The load and soak tests at full size (tests/service/test_load.py; `make test` runs them small):
# a burst of 1000 against a 16-image queue, 50,000 requests at c=64, 20 reloads under load.
# Prints the figures (docs/reliability.md). ~4 min on 2 cores.
soak: $(BIN)/python
	bash .ci/system-deps
	$(BIN)/pip install --quiet -e '.[cpu,train,dev]'
	MIMO_SOAK_REQUESTS=50000 MIMO_SOAK_RELOADS=20 MIMO_BURST_REQUESTS=1000 \
		$(BIN)/pytest -q -s -m soak

# Known vulnerabilities in what the service installs (`.[cpu]`, resolved in a venv of its own),
# from pypi.org's JSON API (or PIP_AUDIT_SERVICE=osv: api.osv.dev); fails on any finding and on
# any package it could not check.
AUDIT_VENV ?= .venv-audit
audit: $(BIN)/python
	$(BIN)/pip install --quiet pip-audit
	rm -rf $(AUDIT_VENV) && $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet '.[cpu]'
	$(AUDIT_VENV)/bin/pip freeze --exclude mimo-serve > $(AUDIT_VENV)/requirements.txt
	$(BIN)/pip-audit --strict --progress-spinner off --disable-pip --no-deps \
		--vulnerability-service $${PIP_AUDIT_SERVICE:-pypi} -r $(AUDIT_VENV)/requirements.txt

lint: $(BIN)/python
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The embedded default model (models/mnist/2): train, evaluate, export. ~25 min on 2 cores.
default-model: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu,train]'
	$(BIN)/python -m training.experiments --runs $(RUNS) default-model --data-dir $(MNIST_DIR)

# docs/results.md: the width x M x rho x outlier grid (3 epochs a run, 3 seeds), the deep ensembles
# of 3, the 12-epoch deterministic baseline. Trains and evaluates only what docs/results/ lacks;
# all of it is ~10 h on 2 cores (width 2 alone ~2 h a seed). `make results-table` re-renders the
# page from the committed records without training.
results: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu,train]'
	$(BIN)/python -m training.experiments --runs $(RUNS) results --data-dir $(MNIST_DIR)

results-table: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu,train]'
	$(BIN)/python -m training.experiments table

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
