# Every target installs into .venv (created when missing); nothing touches the system Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# torch is installed before the project so its `torch>=2.4` is already met (an unpinned
# request would pull a several-GB CUDA build). A machine whose pip finds a local CPU wheel
# gets that; from PyPI itself torch==2.13.0 is a CUDA build, so for the CPU one pass
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.DEFAULT_GOAL := help
.PHONY: help bwrap install dev demo test unit integration e2e acceptance unit-cov format lint \
	typecheck mypy pyright quality bench bench-lm bench-sandbox \
	bench-grpo bench-grpo-large bench-finetune bench-lm-large bench-sweep grpo-demo prepare train sample loop tensorboard clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# bubblewrap runs model-written code (code_execution rewards, HumanEval): installed with
# apt-get where that works (root, Debian/Ubuntu), else the line says how to get it.
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null; \
	  else \
	    echo "note: bubblewrap (bwrap) is missing: code rewards and HumanEval need it" \
	      "(apt-get/dnf/pacman install bubblewrap; docs/security.md)"; \
	  fi; }

$(VENV)/.installed: pyproject.toml | $(PY) bwrap
	$(PIP) install "$(TORCH)" $(TORCH_INDEX)
	$(PIP) install -e ".[rl]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY) bwrap
	$(PIP) install "$(TORCH)" $(TORCH_INDEX)
	$(PIP) install -e ".[dev,rl]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Install the package into .venv

dev: $(VENV)/.installed-dev ## Install the package with its development tools

# Seed 001's set-up: every dependency group, through uv when it is on PATH or installable
# from the package index, else pip. uv reads no pip.conf, so pip's find-links (a local torch
# wheel) is handed to it; torch still goes in first, pinned, for the reason above.
GROUPS ?= all,dev,sweep,track
UV_LINKS := $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
.PHONY: setup verify
setup: | $(PY) bwrap ## Create .venv with every dependency group (uv when available, else pip)
	@uv=$$(command -v uv || { $(PIP) install uv >/dev/null 2>&1 && echo $(BIN)/uv; }); \
	if [ -n "$$uv" ]; then \
	  echo "installing with $$uv"; \
	  $$uv pip install -q --python $(PY) $(UV_LINKS) "$(TORCH)" $(TORCH_INDEX) && \
	  $$uv pip install -q --python $(PY) $(UV_LINKS) -e ".[$(GROUPS)]"; \
	else \
	  echo "uv is not available: installing with pip"; \
	  $(PIP) install "$(TORCH)" $(TORCH_INDEX) && $(PIP) install -e ".[$(GROUPS)]"; \
	fi
	@touch $(VENV)/.installed $(VENV)/.installed-dev

verify: ## Check the environment: imports, mlx --version, a one-second tabular run
	@test -x $(PY) || { echo "no $(VENV): run make setup"; exit 1; }
	$(PY) tools/verify.py

demo: install ## Run the example experiment, evaluate it, and show where everything is
	$(BIN)/mlx run-experiment --config experiments/example.json
	@run=$$(ls -d runs/example-comprehensive/*/ | sort | tail -n 1); \
	$(BIN)/mlx eval --run-dir $$run && \
	echo "" && echo "Run directory:   $$run" && \
	echo "Metrics:         $${run}metrics/metrics.md" && \
	echo "Evaluation:      $${run}eval/" && \
	echo "Checkpoints:     $${run}checkpoints/" && \
	echo "Run history:     runs/index.json  (mlx history --output-dir runs)" && \
	echo "" && echo "mlx lives in .venv/bin: run 'source .venv/bin/activate' to type plain 'mlx'," && \
	echo "or call it as .venv/bin/mlx (for example: .venv/bin/mlx history --output-dir runs)."

# One pytest worker per core (PYTEST_WORKERS=0: none); a file's tests stay on one worker, so
# the runs a module makes once are made once. Most tests wait on one single-threaded mlx
# process, so two workers on two cores take about half the time of one.
PYTEST_WORKERS ?= auto
test: dev ## Run the whole test suite
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

unit: dev ## Run the unit tests
	$(BIN)/pytest -q -m unit

integration: dev ## Run the integration tests
	$(BIN)/pytest -q -m integration

e2e: dev ## Run the end-to-end CLI tests
	$(BIN)/pytest -q -m e2e

acceptance: dev ## Run the acceptance tests: the policies every run keeps
	$(BIN)/pytest -q -m acceptance

# The unit tests' coverage of src/, with the floor CI enforces (the level measured when it was set).
COV_FLOOR ?= 61
unit-cov: dev ## Unit tests with coverage: terminal report, HTML in out/coverage, floor COV_FLOOR%
	$(BIN)/pytest -q -m unit --cov=mlharness --cov-report=term:skip-covered \
	  --cov-report=html:out/coverage --cov-fail-under=$(COV_FLOOR)

format: dev ## Format the code and sort imports
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

lint: dev ## Lint with ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: dev ## Type-check src/ with mypy --strict (the same as make mypy)
	$(BIN)/mypy

mypy: typecheck ## Type-check src/ with mypy --strict

pyright: dev ## Type-check src/ with pyright
	$(BIN)/pyright src

quality: lint pyright typecheck test ## Format check, ruff, pyright, mypy and the whole suite

# Mutation testing (DEVELOPMENT.md): Cosmic Ray with pyproject.toml's [tool.cosmic-ray], in a
# copy of src/ and tests/ under out/cosmic-ray/tree, because it rewrites each module it mutates
# in place (a run cut short would leave a mutant in the checkout). The session database keeps
# the results: a second run continues it; delete it after changing the code. Never fails on
# surviving mutants (a failing baseline, the tests on unmutated code, does); CI does not run it.
CR_DIR := out/cosmic-ray
.PHONY: quality-ext
quality-ext: dev ## Mutation testing with Cosmic Ray, non-fatal (scope and time: DEVELOPMENT.md)
	@test -x $(BIN)/cosmic-ray || $(PIP) install -e ".[mutation]"
	@rm -rf $(CR_DIR)/tree && mkdir -p $(CR_DIR)/tree && cp -r src tests pyproject.toml $(CR_DIR)/tree/
	$(PY) tools/mutation.py config pyproject.toml $(CR_DIR)/config.toml
	cd $(CR_DIR)/tree && export PATH="$(abspath $(BIN)):$$PATH" PYTHONPATH=src && \
	  if [ ! -f ../session.sqlite ]; then cosmic-ray baseline ../config.toml && \
	    cosmic-ray init ../config.toml ../session.sqlite && \
	    cr-filter-operators ../session.sqlite ../config.toml; fi && \
	  cosmic-ray exec ../config.toml ../session.sqlite
	@$(PY) tools/mutation.py score $(CR_DIR)/session.sqlite
	@echo "Diffs of the survivors: $(BIN)/cr-report --show-diff --surviving-only $(CR_DIR)/session.sqlite"

bench: dev ## Benchmark the tabular engine against scikit-learn
	$(PY) bench/tabular.py

bench-lm: dev ## Benchmark the lm engine (add NANOGPT=path to run nanoGPT side by side)
	$(PY) bench/lm.py $(if $(NANOGPT),--nanogpt $(NANOGPT))

bench-lm-large: dev ## lm training at nanoGPT's shakespeare_char config on the CPU (add NANOGPT=path)
	$(PY) bench/lm_large.py $(if $(NANOGPT),--nanogpt $(NANOGPT)) $(BENCH_ARGS)

bench-sweep: dev ## The per-trial overhead of mlx sweep over running the same tabular configs by hand
	$(PY) bench/sweep.py $(BENCH_ARGS)

bench-sandbox: dev ## Benchmark the code sandbox: bubblewrap against the process backend
	$(PY) bench/sandbox.py $(BENCH_ARGS)

bench-grpo: dev ## Benchmark GRPO against TRL's GRPOTrainer (TRL: pip install "mlharness[bench]")
	$(PY) bench/grpo.py $(BENCH_ARGS)

bench-grpo-large: dev ## GRPO at GPT-2-small size, full and LoRA, against TRL's GRPOTrainer (~12 min)
	$(PY) bench/grpo_large.py $(BENCH_ARGS)

bench-finetune: dev ## Benchmark LoRA fine-tuning against TRL's SFTTrainer (TRL: pip install "mlharness[bench]")
	$(PY) bench/finetune.py $(BENCH_ARGS)

.PHONY: gpu-check
gpu-check: dev ## On one CUDA GPU (< 8 min): lm at GPT-2-small size, GRPO, pytest -m cuda
	PYTHON=$(PY) bench/gpu_check.sh $(BENCH_ARGS)

# The language-model playground: make loop EXP=shakespeare_char CONFIG=experiments/shakespeare_char_cpu.toml
# INPUT=path/to/text.txt uses a local source file instead of a download.
LM_ARGS = $(EXP) $(if $(CONFIG),--config $(CONFIG))

prepare: install ## Prepare an lm experiment's data: EXP=name [CONFIG=file] [INPUT=file]
	$(BIN)/mlx prepare $(LM_ARGS) $(if $(INPUT),--input $(INPUT))

train: install ## Train (or resume) a GPT: EXP=name CONFIG=file
	$(BIN)/mlx train $(LM_ARGS)

sample: install ## Sample from the experiment's latest run: EXP=name CONFIG=file
	$(BIN)/mlx sample $(LM_ARGS)

loop: install ## Prepare if needed, train, sample: EXP=name CONFIG=file [INPUT=file]
	$(BIN)/mlx loop $(LM_ARGS) $(if $(INPUT),--input $(INPUT))

# The offline GRPO quick start: a small char GPT learns some two-digit additions, then GRPO
# with an exact-match reward raises its accuracy on held-out problems.
grpo-demo: install ## Offline GRPO quick start: train a small GPT on additions, then GRPO it
	$(BIN)/mlx loop arithmetic_base --config experiments/arithmetic_base.toml
	$(BIN)/mlx train --config experiments/grpo_arithmetic.yaml --fresh

PORT ?= 6006
tensorboard: install ## Show TensorBoard for LOGDIR=runs/<experiment>/<run>/logs/tb [PORT=6006]
	$(BIN)/tensorboard --logdir $(or $(LOGDIR),runs) --port $(PORT)

# LIT (the Learning Interpretability Tool) on an lm run. lit-nlp pins numpy below 2 and brings
# many packages, so it lives in its own environment, .venv-lit, and never touches .venv; torch
# goes in first there too, for the reason above. PORT given on the command line is used, else
# mlx lit picks a free one.
LIT_VENV ?= .venv-lit
.PHONY: lit-env lit lit-test

$(LIT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LIT_VENV)
	$(LIT_VENV)/bin/python -m pip --disable-pip-version-check -q install "$(TORCH)" $(TORCH_INDEX)
	$(LIT_VENV)/bin/python -m pip --disable-pip-version-check -q install -e ".[lit]" "pytest>=7.4"
	@touch $@

lit-env: $(LIT_VENV)/.installed ## Create .venv-lit: LIT (lit-nlp) and the lm engine, apart from .venv

lit: lit-env ## Serve LIT on an lm run: RUN=runs/<experiment>[/<run>] [PORT=n]
	$(LIT_VENV)/bin/mlx lit $(RUN) $(if $(filter command line,$(origin PORT)),--port $(PORT))

lit-test: lit-env ## Run the LIT tests in .venv-lit
	$(LIT_VENV)/bin/python -m pytest -q tests/integration/test_lit.py

clean: ## Remove the virtual environments (.venv, .venv-lit) and caches
	rm -rf $(VENV) $(LIT_VENV) .pytest_cache .mypy_cache .ruff_cache
