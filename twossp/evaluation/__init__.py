"""Evaluation: perplexity, downstream tasks, efficiency."""
