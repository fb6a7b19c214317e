# twossp: common entry points. Run `make setup` once (creates .venv), then the rest.
PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: setup demo test lint

setup:
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e ".[dev]"

# The embedded default: 2SSP and dense on stories260K, WikiText-2 / C4 / PTB perplexity, offline.
demo:
	$(PY) experiments/run.py -m model=stories260k method=dense,twossp sparsity=0.375

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check twossp baselines experiments analysis tests
