# Two entry points that bootstrap everything on a fresh machine:
#   make train   run the default experiment (digits, mlp, adam, 5-fold CV)
#   make test    lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: train test test-all check lint imports typecheck pytest docs docs-reference docs-images bench gallery clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,optuna,docs,images,text,tensorboard,mlflow,ray]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/mlcli train $(ARGS)

test: check

check: lint imports typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check mlcli hydra_plugins tests bench docs
	$(BIN)/ruff format --check mlcli hydra_plugins tests bench docs

# The layers of mlcli (pyproject.toml [tool.importlinter]): every import counts, in functions too.
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The quick run of every lab demonstration (marker lab) and the runs of minutes each (marker
# long) are left to test-all, so that CI stays under 30 minutes.
pytest: $(STAMP)
	$(BIN)/python -m pytest -m "not lab and not long" $(PYTEST_ARGS)

test-all: lint imports typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The documentation site, built as CI builds it: any broken link or reference fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

# Regenerate docs/reference/*.md from conf/, the schemas and `--help` (a test checks them).
docs-reference: $(STAMP)
	$(BIN)/python docs/gen_reference.py

# Regenerate the pictures of a report in docs/img/ from the shipped tests/data/runs sweep.
docs-images: $(STAMP)
	$(BIN)/python docs/gen_images.py

# Every lab demonstration's full run, then the gallery page (docs/lab.md, figures in docs/lab/);
# GALLERY_ARGS=--quick for the quick runs.
GALLERY_ROOT ?= outputs
gallery: $(STAMP)
	for name in $$($(BIN)/python -c "from mlcli.lab import DEMOS; print(*DEMOS)"); do \
		$(BIN)/mlcli lab run $$name $(GALLERY_ARGS) progress=false outputs_root=$(GALLERY_ROOT) || exit 1; \
	done
	$(BIN)/mlcli lab gallery docs/lab $(GALLERY_ARGS) --outputs-root $(GALLERY_ROOT) \
		--machine "$$(nproc) shared CPU cores, no GPU"

# Training speed against a hand-written loop (bench/README.md lists the other benchmarks);
# e.g. make bench ARGS="--baseline /tmp/base" compares with another checkout in the same run.
bench: $(STAMP)
	$(BIN)/python bench/speed.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .site
