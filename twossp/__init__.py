"""twossp: a research harness for structured pruning of LLMs (2SSP and baselines)."""

__version__ = "0.1.0"
