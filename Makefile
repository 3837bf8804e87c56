# The two commands of the README: `make test` and `make book`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= smoke
CHAPTERS ?=
BOOK_ARGS ?=

.PHONY: test book lab lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest

# make book [PROFILE=smoke|preview|full] [CHAPTERS="01 03"] [BOOK_ARGS="--set device=cuda"]:
# executes the chapters with papermill at PROFILE, then builds _build/html with warnings as errors.
book: $(STAMP)
	$(PY) -m coop_utils book --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(BOOK_ARGS)

# JupyterLab on the chapters; a double click opens notebooks/NN_name.py as a notebook (jupytext),
# set in the venv's own JupyterLab settings, not in ~/.jupyter.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP)
	$(VENV)/bin/jupytext-config --settings-file $(LAB_OVERRIDES) set-default-viewer python
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf _build book/executed
