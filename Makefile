# Everything runs in ./.venv, made from scratch on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lake's tests run in a venv of their own: flightrec[lake] pins the duckdb that DuckLake's extensions
# are built for (pyproject.toml), older than the one the rest runs on.
LAKE_VENV := .venv-lake
LAKE_STAMP := $(LAKE_VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(LAKE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LAKE_VENV)
	$(LAKE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LAKE_VENV)/bin/python -m pip install --quiet -e '.[test,lake,lake-test]'
	touch $(LAKE_STAMP)

demo: $(STAMP)
	$(BIN)/flightrec demo

# Three workers (pytest-xdist), even on two cores: tests spend a fifth of their time waiting on a
# subprocess, a server or the browser, which the third fills (RESULTS §49). A test file runs on one
# worker, so that a module fixture is built once; files run in the order tests/conftest.py sets (one
# builds the shared demo store while the others run the rest).
# Then the lake's tests (marked `lake`: a private PostgreSQL, tracer.testing.PrivatePostgres) in the lake's
# venv, which is built meanwhile (its log in .venv-lake.log, printed if the build fails).
test: $(STAMP)
	@$(MAKE) --no-print-directory $(LAKE_STAMP) >.venv-lake.log 2>&1 & lake=$$!; \
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder -m "not lake"; tests=$$?; \
	if ! wait $$lake; then cat .venv-lake.log; echo "building $(LAKE_VENV) failed"; exit 1; fi; \
	[ $$tests -eq 0 ] && $(LAKE_VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m lake

clean:
	rm -rf $(VENV) $(LAKE_VENV) .venv-lake.log flightrec.duckdb flightrec.duckdb.wal flightrec.duckdb.serve.json .pytest_cache
