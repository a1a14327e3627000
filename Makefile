# Everything runs in ./.venv, made from scratch on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flightrec demo

# Three workers (pytest-xdist), even on two cores: tests spend a fifth of their time waiting on a
# subprocess, a server or the browser, which the third fills (RESULTS §49). A test file runs on one
# worker, so that a module fixture is built once; files run in the order tests/conftest.py sets (one
# builds the shared demo store while the others run the rest).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) flightrec.duckdb flightrec.duckdb.wal flightrec.duckdb.serve.json .pytest_cache
