# Two entry points that bootstrap everything on a fresh machine:
#   make train   run the default experiment (digits, mlp, adam, 5-fold CV)
#   make test    lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: train test check lint typecheck pytest bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,optuna]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/mlcli train $(ARGS)

test: check

check: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check mlcli hydra_plugins tests bench
	$(BIN)/ruff format --check mlcli hydra_plugins tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
