# The two commands of the README: `make test` and `make book`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= preview
TRAIN ?=
CHAPTERS ?=
BOOK_ARGS ?=

.PHONY: test book lab lint format clean results benchmarks gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev,export]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest

# make book: the reader's book. Every chapter shows the recorded results (results/) and the
# committed weights and trains nothing (no dataset needed, a few minutes); papermill executes
# the chapters, then _build/html is built with warnings as errors. Training only when asked:
#   make book PROFILE=smoke            every chapter also trains its tiny smoke runs (the tests, CI)
#   make book PROFILE=preview TRAIN=1  every chapter also trains (or reuses) its runs at PROFILE
# [CHAPTERS="01 03"] executes only those; [BOOK_ARGS="--set device=cuda"] sets a parameter.
book: $(STAMP)
	$(PY) -m coop_utils book --profile $(PROFILE) $(if $(TRAIN),--train) \
		$(if $(CHAPTERS),--chapters $(CHAPTERS)) $(BOOK_ARGS)

# JupyterLab on the chapters; a double click opens notebooks/NN_name.py as a notebook (jupytext),
# set in the venv's own JupyterLab settings, not in ~/.jupyter.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP)
	$(VENV)/bin/jupytext-config --settings-file $(LAB_OVERRIDES) set-default-viewer python
	$(VENV)/bin/jupyter lab notebooks/

# make results [PROFILE=preview]: every run of the profile's campaign (params/PROFILE.yaml,
# `campaign`), one after another; a finished run is reused and an interrupted one resumes, so
# this can be stopped (Ctrl-C saves a checkpoint) and started again at will. CAMPAIGN names
# another campaign of the profile (`campaigns:`), such as converged or budget-pilot.
CAMPAIGN ?= campaign
results: $(STAMP)
	$(PY) -m coop_utils results --profile $(PROFILE) --campaign $(CAMPAIGN)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf _build book/executed

# The four benchmarks, recorded in results/benchmarks/ for the book (appendix: Engineering checks).
# Run them on a quiet machine: nothing else training, no test suite.
benchmarks: $(STAMP)
	$(PY) benchmarks/depth_cost.py --record results/benchmarks/depth_cost.json
	$(PY) benchmarks/train_step.py --record results/benchmarks/train_step.json
	$(PY) benchmarks/data_throughput.py --record results/benchmarks/data_throughput.json
	$(PY) benchmarks/export_latency.py --record results/benchmarks/export_latency.json

# make gpu-check [GPU_CHECK_ARGS="--record results/benchmarks/gpu_check.json"]: the first thing
# to run on a machine with a CUDA GPU, with the interpreter found there (no venv: it needs
# PyTorch, pandas, seaborn, tqdm and PyYAML), within 9 minutes: the full profile's
# configuration at 64 px through torchrun (peak memory against the card's), the cooperative
# step eager and compiled side by side (images/s, MFU, compiled graphs), then every method and
# ablation on cuda. Data: a Tiny ImageNet subset (COOP_DATA_ROOT, else gpu-data/), else
# generated images. The venv's interpreter where one exists, else the one on the PATH.
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=. $(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)
