# Two commands for a new user: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system demo test lab bench lint clean

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

# Debian packages the tests use: OpenSSH's server (the SSH path to a virtual board runs
# through a real sshd on 127.0.0.1, started by the tests). Installed only when missing.
system:
	@if [ ! -x /usr/sbin/sshd ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server; \
	  else echo "openssh-server is missing: run 'sudo apt-get install openssh-server' (board tests over SSH skip without it)"; fi; \
	fi

demo: setup
	$(BIN)/rknn-workbench demo

test: setup system
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
