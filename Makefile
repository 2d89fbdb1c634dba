# Two entry points: `make demo` and `make test`. Both create .venv and install into it.
# `make test` is the quick suite to run after every change; `make test-all` (CI) adds the slow
# checks (real-scan training, DDP, ONNX, signals, memory scale). Both spread the tests over
# TEST_WORKERS processes (pytest-xdist; default: the cores, at most 4).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
DEMO_OUT ?= demo-out
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

.PHONY: demo test test-all test-slow coverage lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

# the test extras, and the example plugin (examples/plugin-method: its contract tests and the
# plugin round trip are part of the suite), installed offline beside contraseg
$(VENV)/.test: $(VENV)/.core examples/plugin-method/pyproject.toml
	$(PIP) -e '.[test]'
	$(PIP) --no-deps --no-build-isolation -e examples/plugin-method
	touch $@

demo: $(VENV)/.core
	$(BIN)/contraseg demo --out $(DEMO_OUT)

test: $(VENV)/.test
	$(PYTEST) -m "not slow"

test-all: $(VENV)/.test
	$(PYTEST)

test-slow: $(VENV)/.test
	$(PYTEST) -m slow

# line coverage of src/ over the whole suite (terminal table and coverage.json)
coverage: $(VENV)/.test
	$(PYTEST) --cov --cov-report=term --cov-report=json

# the documentation site, built strictly into site/ (a broken link or an orphan page fails)
$(VENV)/.docs: $(VENV)/.core
	$(PIP) -e '.[docs]'
	touch $@

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(VENV)/.test
	$(BIN)/ruff check src tests examples

clean:
	rm -rf $(VENV) $(DEMO_OUT) site .pytest_cache .coverage coverage.json
