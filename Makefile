# Two commands on a fresh machine: `make demo` and `make test`.
# The CPU build of torch is pinned (an unpinned torch pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU := torch==2.13.0

.PHONY: install demo test lint format bench bench-disentangle quickstart-model clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/factordiff demo

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/hddc.py

# The disentanglement benchmark's CPU tables (README "Results"): ~1 h, ~1.2 h and ~20 min
# on 2 cores.
bench-disentangle: install
	$(BIN)/python benchmarks/disentangle.py --config cpu-quick
	$(BIN)/python benchmarks/disentangle.py --config cpu
	$(BIN)/python benchmarks/baseline_budget.py

# Reproduce the shipped quick-start model: the quickstart preset, ~17 min of training on a 2-core
# AMD EPYC (first stage included) + ~3 min of scoring. The shipped weights came from the same
# recipe and seed run by benchmarks/time_to_disentangle.py (its provenance names that run).
QS_RUN ?= runs/quickstart-model
QS_OUT := src/factordiff/pretrained/quickstart
# Writing into the package is refused unless FACTORDIFF_ALLOW_PACKAGE_WRITES=1 (maintainers).
quickstart-model: install
	$(BIN)/factordiff train quickstart --out $(QS_RUN) train.eval_every=500 train.eval_scale=1.0 train.checkpoint_every=100000 train.keep_checkpoints=1
	FACTORDIFF_ALLOW_PACKAGE_WRITES=1 $(BIN)/python -c "import torch, factordiff as fd; fd.FactorDiffusion.from_pretrained('$(QS_RUN)').save_pretrained('$(QS_OUT)', dtype=torch.float16)"
	cp $(QS_RUN)/metrics.jsonl $(QS_OUT)/train_log.jsonl
	FACTORDIFF_ALLOW_PACKAGE_WRITES=1 $(BIN)/factordiff eval $(QS_OUT) --out $(QS_OUT)/eval.json
	FACTORDIFF_ALLOW_PACKAGE_WRITES=1 $(BIN)/factordiff downstream $(QS_OUT) --out $(QS_OUT)/downstream.json
	FACTORDIFF_ALLOW_PACKAGE_WRITES=1 $(BIN)/factordiff interchange $(QS_OUT) --pairs 32 --steps 50 --out $(QS_OUT)/interchange.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
