# `make demo` and `make test` set up everything they need in .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	# The pinned CPU build first: an unpinned torch would pull several GB of CUDA packages.
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tadprune train studies/demo.yaml --out runs/demo/base
	$(VENV)/bin/tadprune profile runs/demo/base --threads 2

test: $(STAMP)
	$(PYTHON) -m pytest -q
