# Two commands for a new user: `make demo` and `make test`. Both set everything up first.
# The toolkit's wheels are for CPython 3.11: use python3.11 when it exists.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
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

# Debian packages the tests use, installed only when missing (as root; apt-get update once):
# OpenSSH's server (the SSH path to a virtual board runs through a real sshd on
# 127.0.0.1) and chromium (the browser test drives JupyterLab in it through Playwright,
# which never downloads a browser of its own).
SYSTEM_PACKAGES := $(if $(wildcard /usr/sbin/sshd),,openssh-server) $(if $(wildcard /usr/bin/chromium /usr/bin/chromium-browser),,chromium fonts-liberation)
system:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES); \
	  else echo "missing Debian packages: run 'sudo apt-get install $(strip $(SYSTEM_PACKAGES))' (their tests skip without them)"; fi; \
	fi

demo: setup system
	$(BIN)/rknn-workbench demo

test: setup system
	$(BIN)/python -m pytest

# Lab's "fetch Jupyter news?" prompt is turned off (a default the user can change in Settings).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: setup
	@mkdir -p $(dir $(LAB_OVERRIDES))
	@test -f $(LAB_OVERRIDES) || echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}' > $(LAB_OVERRIDES)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --allow-root --notebook-dir notebooks

bench: setup
	$(BIN)/python benchmarks/bench_float_capture.py
	$(BIN)/python benchmarks/bench_support.py
	$(BIN)/python benchmarks/bench_divergence.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_lab.py
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_split.py
	$(BIN)/python benchmarks/bench_model_explorer.py

lint: setup
	$(BIN)/ruff check workbench tests benchmarks datasets notebooks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
