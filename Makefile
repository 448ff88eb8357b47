# The two commands a user needs: `make run` and `make test`. Each does all of its own set-up.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test install install-dev lint typecheck contracts pytest bench format lock clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is written at install time, for the dependencies (--compile-bytecode) and for our own
# code: where PYTHONDONTWRITEBYTECODE is set (it is on our CI machines), every `crmflow` process
# would otherwise compile all it imports again (`crmflow records list` took 3.4 s instead of 1.4 s).
SYNC := $(UV) sync --frozen --inexact --quiet --compile-bytecode
COMPILE_OWN := $(BIN)/python -m compileall -q src

# Runtime dependencies only, exactly as locked in uv.lock.
install: $(UV)
	$(SYNC)
	$(COMPILE_OWN)

# Runtime and test dependencies, exactly as locked.
install-dev: $(UV)
	$(SYNC) --extra dev
	$(COMPILE_OWN)

run: install
	$(BIN)/crmflow db upgrade
	$(BIN)/crmflow serve --demo

test: install-dev lint typecheck contracts pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

contracts:
	$(BIN)/lint-imports

# Two processes (the machines this runs on have two cores), whole files each, so that a module's
# live server starts once; PYTEST_WORKERS=0 runs everything in one process. --durations=20 lists
# the slowest tests in every log, so a test that grows slow is seen.
PYTEST_WORKERS ?= 2
pytest:
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench $(BENCH_ARGS)

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
