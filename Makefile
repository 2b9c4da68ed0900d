# The two README commands: `make run` and `make test`. Each creates .venv with the
# project installed when it is missing or pyproject.toml changed (stamp file).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: run test lint format venv clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/kts run $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs serving_models mlflow.db mlruns mlartifacts .pytest_cache
