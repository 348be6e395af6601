# wattwise: `make train` and `make test` are the two commands a newcomer needs.
# Each creates .venv on first use (idempotent) from the pinned versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed
ARGS ?=
SWEEP ?=
# Test processes (pytest-xdist): the suite's runs are single-threaded, so two workers use the two
# cores of the CI machine, and steal work from each other so that no long test is left alone at the end;
# TEST_WORKERS=0 runs in one process (pdb, -x, print debugging).
TEST_WORKERS ?= 2

.PHONY: install train test test-fast bench bench-quick bench-gpu gpu-check overhead-bench sweep compare lint format clean

install: $(STAMP)

# torch first, pinned, so that no other package can pull a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,sweep,slurm,quant]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	MPLCONFIGDIR=$${MPLCONFIGDIR:-/tmp/wattwise-mpl} WANDB_MODE=offline $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-fast: $(STAMP)
	MPLCONFIGDIR=$${MPLCONFIGDIR:-/tmp/wattwise-mpl} WANDB_MODE=offline $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) bench/energy_bench.py $(ARGS)

bench-quick: $(STAMP)
	$(PY) bench/energy_bench.py --quick $(ARGS)

# One CUDA card, NVML through the energy monitor, the card's idle power measured; changes nothing on it.
bench-gpu: $(STAMP)
	$(PY) bench/energy_bench.py --gpu $(ARGS)

# One CUDA card, about 8 minutes: every registered method and green through train.py (NVML energy),
# each resumed once, then the GPU bench's short form; report in bench/results/gpu-<date>-<card>.md.
# Read-only towards the card (power: dry run). Without a GPU it stops in one line;
# make gpu-check ARGS=--dry-run lists the steps, estimates and budget anywhere.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(ARGS)

# CPU-seconds of wattwise's loop against plain PyTorch and bare Lightning, and the arithmetic floor
# (bench/overhead_bench.py; run it alone on the machine: ARGS=--quick for a rough smoke run).
overhead-bench: $(STAMP)
	$(PY) bench/overhead_bench.py $(ARGS)

# The baseline, each registered method alone and each recipe (green), the list from the registry, each
# with 3 seeds, interleaved and rotated per seed (hydra/sweeper=compare; ARGS=hydra.sweeper.seeds=5);
# a method that does not apply on this machine is skipped, not failed; compare's table comes at the end.
sweep: $(STAMP)
	$(PY) train.py -m hydra/sweeper=compare "optim=$$($(PY) -m wattwise.methods.registry --sweep)" $(ARGS)

# make compare SWEEP=outputs/multirun/<date>/<time>  (defaults to the newest sweep)
compare: $(STAMP)
	@sweep="$(SWEEP)"; [ -n "$$sweep" ] || sweep=$$(ls -d outputs/multirun/*/* 2>/dev/null | sort | tail -n 1); \
	if [ -z "$$sweep" ]; then echo "make compare: no sweep under outputs/multirun: run one (make sweep) or pass SWEEP=<dir>" >&2; exit 2; fi; \
	$(PY) -m wattwise.compare "$$sweep"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench train.py
	$(VENV)/bin/ruff format --check src tests bench train.py

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests bench train.py
	$(VENV)/bin/ruff format src tests bench train.py

clean:
	rm -rf outputs/* multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
