# pathseg — `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip --disable-pip-version-check
# pip prints one harmless warning per package for the machine's file:// mirrors; hide those lines only.
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PLUGINS := $(wildcard pathseg_plugins/*/pyproject.toml)
STAMP := $(VENV)/.pathseg-installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test test-all lint bench clean help
help:
	@echo "make demo   - set up .venv, train the tiny SAM baseline on OCDC tiles, segment the CMU slide"
	@echo "make test   - set up .venv, ruff + the default test suite"
	@echo "make test-all / make bench - include slow tests / run the benchmarks"

install: $(STAMP)
$(STAMP): pyproject.toml constraints.txt $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 $(QUIET)
	$(PIP) install -q -e ".[dev]" $(foreach p,$(PLUGINS),-e $(dir $(p))) $(QUIET)
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation "sam2==1.1.0" $(QUIET)
	$(PY) -c "from pathseg_core._torchvision_ops import install_pth; print(install_pth())"
	$(PY) -c "import pathseg_core, lightning, torchmetrics, segment_anything, sam2; print('environment ok')"
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache pathseg_core pathseg_plugins examples tests benchmarks

test: $(STAMP) lint
	$(VENV)/bin/pytest -q

test-all: $(STAMP)
	$(VENV)/bin/pytest -q -m "slow or not slow"

demo: $(STAMP)
	$(PY) examples/demo.py

bench: $(STAMP)
	$(PIP) install -q -e ".[bench]" $(QUIET)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo_out bench_out lightning_logs
