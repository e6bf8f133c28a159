# Two commands set up a fresh machine: `make demo` and `make test` (both create .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.datafree-installed

.PHONY: demo test lint bench-cifar10 clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[demo,report,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m datafree demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check datafree tests benchmarks

bench-cifar10: $(STAMP)
	$(PY) benchmarks/cifar10_dfkd.py --budget 60m

clean:
	rm -rf runs .pytest_cache
