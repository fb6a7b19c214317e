# twossp: common entry points. Every target first makes sure .venv is installed.
PY := .venv/bin/python
VENV := .venv/.installed

.PHONY: setup demo test lint reproduce-table

setup: $(VENV)

$(VENV): pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $(VENV)

# The embedded default: 2SSP and dense at 37.5% under the paper protocol, perplexity on the
# first DEMO_WINDOWS windows of WikiText-2 / C4 / PTB, then the table. stories260K from
# ../shared (or $TWOSSP_SHARED) when present, else SmolLM2-135M from the hub.
SHARED_DIR := $(or $(TWOSSP_SHARED),../shared)
DEMO_MODEL ?= $(if $(wildcard $(SHARED_DIR)/assets/models/stories260K/config.json),stories260k,smollm2_135m)
DEMO_WINDOWS ?= 16
DEMO_RESULTS ?= results/demo
demo: $(VENV)
	TWOSSP_RESULTS=$(abspath $(DEMO_RESULTS)) $(PY) experiments/run.py -m model=$(DEMO_MODEL) \
		method=dense,twossp sparsity=0.375 eval.max_windows=$(DEMO_WINDOWS) \
		experiment_name=demo progress=false
	@TWOSSP_RESULTS=$(abspath $(DEMO_RESULTS)) $(PY) -m analysis.collect > /dev/null
	@TWOSSP_RESULTS=$(abspath $(DEMO_RESULTS)) $(PY) -m analysis.tables --experiment demo \
		--out $(DEMO_RESULTS)/tables --only table1_ppl

# One pytest-xdist worker per core (tests/conftest.py gives each worker its share of the
# threads); a file's tests stay on one worker, so its fixtures load once.
test: $(VENV)
	$(PY) -m pytest -q -n auto --dist loadfile

lint: $(VENV)
	$(PY) -m ruff check twossp baselines experiments analysis tests bench hydra_plugins
	$(PY) -m ruff format --check twossp baselines experiments analysis tests bench hydra_plugins

# Reproduce one experiment end to end: its Hydra sweep (conf/experiment/$(EXPERIMENT).yaml, a
# sweep by itself; finished runs are skipped and join the experiment), then merge the run files
# into $(RESULTS)/results.parquet and render the experiment's tables (md + tex; ablation views
# for ablation_alpha / ablation_calib) and plots under $(RESULTS)/{tables,plots}/$(EXPERIMENT).
# EXPERIMENT=cpu_demo runs offline on stories260K in minutes; the paper's experiments (table1,
# table2_downstream, pruning_time, ablation_alpha, ablation_calib) need GPUs. OVERRIDES passes
# extra Hydra overrides to the sweep, e.g. OVERRIDES="model=stories260k eval.max_windows=16"
# (a value list such as method.alpha=1.0,2.0 replaces the overlay's grid). THREADS sets
# OMP_NUM_THREADS for the sweep (1 is fastest for the tiny demo model on a small shared CPU;
# empty keeps torch's default).
EXPERIMENT ?= cpu_demo
RESULTS ?= results
THREADS ?= $(if $(filter cpu_demo,$(EXPERIMENT)),1,)
RESULTS_ENV = TWOSSP_RESULTS=$(abspath $(RESULTS))
MERGED = $(abspath $(RESULTS))/results.parquet

reproduce-table: $(VENV)
	$(RESULTS_ENV) $(if $(THREADS),OMP_NUM_THREADS=$(THREADS)) \
		$(PY) experiments/run.py -m experiment=$(EXPERIMENT) $(OVERRIDES)
	$(PY) -m analysis.collect --results-dir $(abspath $(RESULTS)) --out $(MERGED)
	$(PY) -m analysis.tables --experiment $(EXPERIMENT) --results $(MERGED) --out $(RESULTS)/tables/$(EXPERIMENT)
	$(PY) -m analysis.plots --experiment $(EXPERIMENT) --results $(MERGED) --out $(RESULTS)/plots/$(EXPERIMENT)

# A results page written from the record: docs/results/<name>.md with every table, the paired
# verdict sentences, where it ran, and its plots beside it. RECORD is a results folder (default:
# the committed record in docs/results/record); EXPERIMENT may list several experiments for one
# page (NAME names it, default the first); LOGGER=wandb also logs the tables and plots to one
# W&B summary run (WANDB_MODE=offline works without a key).
RECORD ?= docs/results/record
.PHONY: report
report: $(VENV)
	$(PY) -m analysis.report $(foreach e,$(EXPERIMENT),--experiment $(e)) --record $(RECORD) \
		$(if $(NAME),--name $(NAME)) $(if $(LOGGER),--logger $(LOGGER))

# The SmolLM2 results page, docs/results/smollm2.md: the authors' budgets, their calibration
# draws, the 1,000-document downstream runs, the tasks at chance apart and the cut budgets, each
# a part, with the ranking of the authors' budgets against the cut ones and the inference
# replay (analysis.combined).
SMOLLM2_PARTS := cpu_smollm2_authors cpu_smollm2_authors_draws cpu_smollm2_authors_downstream \
	cpu_smollm2_authors_chance cpu_smollm2
.PHONY: smollm2-page
smollm2-page: $(VENV)
	$(PY) -m analysis.combined --name smollm2 --record $(RECORD) \
		$(foreach p,$(SMOLLM2_PARTS),--part $(p)) --rank cpu_smollm2_authors:cpu_smollm2 \
		$(if $(LOGGER),--logger $(LOGGER))

# Efficiency bench, offline (~24 min on 2 CPUs): pruning time of every registered method, 2SSP
# stage-2 caching, perplexity-harness overhead, pruned-model latency and memory against the
# FLOP / parameter ideal, peak RSS of a pruning run. Writes $(RESULTS)/bench.md and bench.json.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--quick" or "--sections prune --threads 0".
.PHONY: bench
bench: $(VENV)
	$(RESULTS_ENV) $(PY) -m bench.run $(BENCH_ARGS)

# GPU checks for a lent GPU machine (one H200, Python 3.12, no network; see bench/device_check.sh).
# device-prep runs here, with network: wheels (at constraints.txt's versions) of what that
# machine's image lacks into .whl/, and stories260K with the text into .device_shared/ (both
# ignored by git; name them in the device call's carry). Then, on the device:
#   bash bench/device_check.sh
DEVICE_WHEELS := transformers tokenizers huggingface_hub hf-xet httpx2 httpcore2 truststore \
	anyio idna h11 click regex safetensors typer shellingham hydra-core omegaconf
DEVICE_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
pin = $(shell grep -i -m1 '^$(1)==' constraints.txt)
.PHONY: device-prep
device-prep: $(VENV)
	rm -rf .whl .device_shared && mkdir -p .whl .device_shared/assets/models
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(DEVICE_PLATFORMS) -d .whl \
		$(foreach p,$(DEVICE_WHEELS),$(call pin,$(p)))
	$(PY) -m pip wheel -q --no-deps -w .whl $(call pin,antlr4-python3-runtime)
	cp -r $(SHARED_DIR)/assets/models/stories260K .device_shared/assets/models/
	cp -r $(SHARED_DIR)/assets/text .device_shared/assets/
	chmod -R u+w .device_shared
	@du -sh .whl .device_shared
