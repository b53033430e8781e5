# A newcomer's two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench-ingest bench-engine bench-detection bench-faults bench-reads bench-all clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode puts the checkout on sys.path, so new packages need no reinstall
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/careloop demo

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench-ingest: install
	$(BIN)/careloop bench ingest

bench-engine: install
	$(BIN)/careloop bench engine

bench-detection: install
	$(BIN)/careloop bench detection

bench-faults: install
	$(BIN)/careloop bench faults

bench-reads: install
	$(BIN)/careloop bench reads

# the suite at a modest size; its curves need the bench extra (matplotlib)
bench-all: install
	$(BIN)/pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=compat
	$(BIN)/careloop bench all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
