# twossp: common entry points. Every target first makes sure .venv is installed.
PY := .venv/bin/python
VENV := .venv/.installed

.PHONY: setup demo test lint

setup: $(VENV)

$(VENV): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e ".[dev]"
	touch $(VENV)

# The embedded default: 2SSP and dense on stories260K, WikiText-2 / C4 / PTB perplexity, offline.
demo: $(VENV)
	$(PY) experiments/run.py -m model=stories260k method=dense,twossp sparsity=0.375

test: $(VENV)
	$(PY) -m pytest -q

lint: $(VENV)
	$(PY) -m ruff check twossp baselines experiments analysis tests
