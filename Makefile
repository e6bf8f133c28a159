# Two commands set up a fresh machine: `make demo` and `make test` (both create .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.datafree-installed

.PHONY: demo test lint bench-cifar10 bench-replay bench-condensed bench-ptq hw-costs sweep clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[demo,report,dev,export]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m datafree demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check datafree tests benchmarks

bench-cifar10: $(STAMP)
	$(PY) benchmarks/cifar10_dfkd.py --budget 60m

bench-replay: $(STAMP)
	$(PY) benchmarks/mnist_replay.py --budget 10m
	$(PY) benchmarks/cifar10_replay.py --budget 60m

bench-condensed: $(STAMP)
	$(PY) benchmarks/cifar10_condensed.py --budget 60m

bench-ptq: $(STAMP)
	$(PY) benchmarks/cifar10_ptq.py

# the Yosys MAC cost table (datafree/hw/mac_costs.csv): every 3-8 bit weight x activation format pair
hw-costs: $(STAMP)
	@command -v yosys >/dev/null || (apt-get update -q && apt-get install -y -q yosys)
	$(PY) -m datafree.hw.cost

# the design-space sweep on ResNet-56 (CIFAR-10): CSV + Pareto plot into benchmarks/results/
# (round-to-nearest over 19 weight x 11 activation formats, 1,000 test images per point: ~27 min,
#  plus ~9 min to invert the 512 calibration images;
#  the algorithms are compared per format in benchmarks/cifar10_ptq.py; it reads the committed MAC table:
#  `make hw-costs` regenerates that with Yosys)
sweep: $(STAMP)
	$(PY) -m datafree sweep --model resnet56 --weights ../shared/models/cifar10/resnet56.pt \
		--eval-data ../shared/data/cifar10/test.npz --out runs/sweep_resnet56 \
		--w-bits 3-8 --a-bits 4,6,8 --eval-samples 1000 --algo rtn
	cp runs/sweep_resnet56/sweep.csv benchmarks/results/sweep_resnet56.csv
	cp runs/sweep_resnet56/pareto.png benchmarks/results/sweep_resnet56_pareto.png
	cp runs/sweep_resnet56/sweep.json benchmarks/results/sweep_resnet56.json

clean:
	rm -rf runs .pytest_cache
