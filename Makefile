# tumorscope — set-up, demo, tests and benchmarks. Every target installs first (a no-op when up to date).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# Installed with --no-deps (panoptica declares numpy/rich versions older than LOCK's; see the file).
LOCK_NODEPS := requirements-brats.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) $(LOCK_NODEPS) pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: install browser demo demo-petct test test-fast lint bench bench-quick bench-ablations bench-long audit clean

install: $(STAMP)

# torch is pinned in the same pip command as everything else (the CPU wheel is found locally).
$(STAMP): $(LOCK) $(LOCK_NODEPS) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -r $(LOCK) -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK_NODEPS)
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/python -m tumorscope.demo --config configs/demo.yaml --out runs/demo

demo-petct: install
	$(BIN)/python -m tumorscope.demo --config configs/demo-petct.yaml --out runs/demo-petct

test: install browser
	$(BIN)/python -m pytest -q

# The UI's browser test drives Debian's chromium (Playwright cannot download its own here):
# installed with apt-get when absent and the user is root; `make demo` never needs it.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { test "$$(id -u)" = 0 || { echo "chromium is missing: install it (apt-get install chromium) for the browser test"; exit 1; }; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

lint: install  # ruff, mypy, and the import contracts of pyproject.toml
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/run_all.py --full

bench-quick: install
	$(BIN)/python benchmarks/run_all.py --quick

bench-ablations: install  # each change of the multi-task recipe on/off; not part of `make bench`
	$(BIN)/python benchmarks/ablations.py --out bench-out

bench-long: install  # long runs (the checkpoint kill trials), not part of `make bench`
	$(BIN)/python benchmarks/run_all.py --long --out bench-out/long

# Known vulnerabilities of the pinned packages (pip-audit in its own venv; needs the
# vulnerability service on the network, so it is not part of CI).
audit:
	@test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && .venv-audit/bin/python -m pip install --quiet "pip-audit==2.10.1")
	.venv-audit/bin/pip-audit --requirement $(LOCK) --requirement $(LOCK_NODEPS) --no-deps --disable-pip --progress-spinner off

clean:
	rm -rf runs bench-out .pytest_cache .mypy_cache .ruff_cache
