# Two commands on a fresh machine with Python 3.11 and git: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# `dvc checkout --relink` turns the copies DVC leaves after a run into hard links to its
# cache (cache.type in .dvc/config), so large DICOM/NIfTI outputs are not stored twice.
# `lungseg register` is idempotent: it makes sure this clone's MLflow registry has the
# model and its champion alias even when DVC's run-cache skipped `evaluate`.
run: install
	$(BIN)/dvc repro
	$(BIN)/dvc checkout --relink --quiet
	$(BIN)/lungseg register

test: install
	$(BIN)/pytest -q

clean:
	rm -rf data/raw/synthetic data/interim data/processed models reports .dvc/cache .dvc/tmp
