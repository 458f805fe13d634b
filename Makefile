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
	$(VENV)/bin/tadprune study launch studies/demo.yaml
	$(VENV)/bin/tadprune study pareto --storage sqlite:///studies/demo.db --study demo --out runs/demo/pareto

test: $(STAMP)
	$(PYTHON) -m pytest -q
