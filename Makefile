# Two commands on a fresh machine with Python 3.11 and git: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test clean real-ct cv

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

# The three full-resolution NSCLC-Radiomics planning CTs of ../shared/real-ct (for checking, never for training):
# their DICOM series come from a git snapshot of primakov/precision-medicine-toolbox (a clone's .git, or the git
# directory the tool library's `fetch` prints), extracted into data/external/ (git-ignored). README "Real CT".
real-ct: install
	@test -n "$(NSCLC_GIT)" || { echo "usage: make real-ct NSCLC_GIT=<git dir of primakov/precision-medicine-toolbox>" >&2; exit 2; }
	PYTHON=$(BIN)/python bash ../shared/real-ct/nsclc-radiomics/get.sh "$(NSCLC_GIT)" data/external/nsclc-radiomics

# k-fold cross-validation (pipelines/cv/dvc.yaml): k more trainings, apart from `make run`; README "Your own data"
cv: install
	$(BIN)/dvc repro pipelines/cv/dvc.yaml

test: install
	$(BIN)/pytest -q

clean:
	rm -rf data/raw/synthetic data/interim data/processed models reports .dvc/cache .dvc/tmp
