# netzoo: generate a zoo of networks, train them all, answer questions about the population.
# Every target runs inside .venv, which `make venv` builds from nothing (pip's cache is reused).

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
NETZOO      := $(BIN)/netzoo
DATASET     ?= digits
DATA_ROOT   ?=
EPOCHS      ?= 4
SEEDS       ?=
GPUS        ?=
SPEC        ?= default
GRID        ?= optimizers
NETWORKS    ?=
ZOO         ?= zoo/$(DATASET)
RESULTS     ?= results/$(DATASET)

DATA_FLAGS  := $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)
SEED_FLAGS  := $(if $(SEEDS),--seeds $(SEEDS),)
GPU_FLAGS   := $(if $(GPUS),--device $(shell echo $(GPUS) | sed -E 's/(^|,)([0-9]+)/\1cuda:\2/g'),)
NET_FLAGS   := $(if $(NETWORKS),--networks '$(NETWORKS)',)

.PHONY: help venv demo test generate train report bench gpu-check study-variance sweep status clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/:.*## /\t/'

$(BIN)/netzoo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test,ray,data]'
	@touch $@

venv: $(BIN)/netzoo  ## create .venv and install netzoo (editable) with its test tools

demo: venv  ## the main job on the embedded digits dataset: generate -> train -> report
	$(NETZOO) generate --dataset $(DATASET) --spec $(SPEC) --out $(ZOO)
	$(NETZOO) train --zoo $(ZOO) --dataset $(DATASET) $(DATA_FLAGS) --results $(RESULTS) --epochs $(EPOCHS) $(SEED_FLAGS) $(GPU_FLAGS)
	$(NETZOO) status --results $(RESULTS)
	$(NETZOO) report --results $(RESULTS)

test: venv  ## run the test suite
	$(BIN)/python -m pytest -q

generate: venv  ## render the zoo for DATASET (default digits) into zoo/DATASET
	$(NETZOO) generate --dataset $(DATASET) --spec $(SPEC) --out $(ZOO)

train: venv  ## train the zoo of DATASET (GPUS=0,1 for GPUs, DATA_ROOT=… for a local copy)
	@test -f $(ZOO)/manifest.parquet || $(NETZOO) generate --dataset $(DATASET) --spec $(SPEC) --out $(ZOO)
	$(NETZOO) train --zoo $(ZOO) --dataset $(DATASET) $(DATA_FLAGS) --results $(RESULTS) --epochs $(EPOCHS) $(SEED_FLAGS) $(GPU_FLAGS) $(NET_FLAGS)

status: venv  ## done / failed / left per family
	$(NETZOO) status --results $(RESULTS)

report: venv  ## write results/DATASET/report/index.html
	$(NETZOO) report --results $(RESULTS)

bench: venv  ## the study's way vs netzoo one run at a time vs fused (8 seeds), a 32-run sweep: docs/benchmarks.md
	$(NETZOO) bench --dataset $(DATASET) --epochs $(EPOCHS)

gpu-check: venv  ## issue 15's GPU figures in one run of < 8 min (DATA_ROOT=… for real MNIST): results/gpu-check/
	$(BIN)/python -m netzoo.benchmarks.gpu_check --out results/gpu-check $(DATA_FLAGS)

study-variance: venv  ## the one-hidden-layer variance-as-size study (DATASET, DATA_ROOT, SEEDS)
	$(NETZOO) generate --spec variance --dataset $(DATASET) --out zoo/variance-$(DATASET)
	$(NETZOO) train --zoo zoo/variance-$(DATASET) --dataset $(DATASET) $(DATA_FLAGS) --results results/variance-$(DATASET) --epochs $(EPOCHS) $(SEED_FLAGS) $(GPU_FLAGS)
	$(NETZOO) report --results results/variance-$(DATASET)

sweep: venv  ## train a subset of the zoo under every recipe of GRID (default optimizers)
	@test -f $(ZOO)/manifest.parquet || $(NETZOO) generate --dataset $(DATASET) --spec $(SPEC) --out $(ZOO)
	$(NETZOO) sweep $(GRID) --zoo $(ZOO) --dataset $(DATASET) $(DATA_FLAGS) --results results/sweep-$(GRID)-$(DATASET) $(SEED_FLAGS) $(NET_FLAGS)
	$(NETZOO) report --results results/sweep-$(GRID)-$(DATASET)

clean:  ## remove generated zoos and results (keeps .venv)
	rm -rf zoo results/*/
