# Two commands for a new user: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lab bench lint clean

setup: $(STAMP)

# Debian's python3 may come without venv/ensurepip: install it when missing (as root).
$(BIN)/python:
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "python3-venv is missing: installing it with apt-get"; \
	  apt-get update && apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/rknn-workbench demo

test: setup
	$(BIN)/python -m pytest

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --allow-root --notebook-dir notebooks

bench: setup
	$(BIN)/python benchmarks/bench_float_capture.py
	$(BIN)/python benchmarks/bench_support.py
	$(BIN)/python benchmarks/bench_divergence.py

lint: setup
	$(BIN)/ruff check workbench tests benchmarks datasets

clean:
	rm -rf $(VENV) runs .pytest_cache
