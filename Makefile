# Two entry points (see README): `make serve` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip

.PHONY: serve test venv install install-test lint bench gpu-test clean js9

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(BIN)/python

install: venv
	$(PIP) install --quiet -e .

install-test: venv
	$(PIP) install --quiet -e ".[test,casa]"

## Start the server on 127.0.0.1:8000 with the built-in demo data (token printed, written to ~/.visivo_token).
## Install JS9 (npm package js9) into app/static/vendor/js9 for the /js9/ viewer (needs npm; no CDN at run time).
js9:
	-scripts/install_js9.sh

serve: install js9
	$(BIN)/visivo-server

## Lint and run the whole test suite (without a GPU the gpu tests run on the CPU emulator of CUDA, which
## needs g++; with --require-gpu they fail instead).
test: install-test js9
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

lint: venv
	$(BIN)/ruff check .

bench: install-test
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
