"""Efficiency benchmarks of the harness (``make bench`` / ``python -m bench.run``).

Every figure is a ratio of two things measured in the same run on the same machine; see
:mod:`bench.run` for what is measured, :mod:`twossp.evaluation.costs` (latency, peak memory,
weight bytes: the product's own instruments) and :mod:`bench.flops` for how.
"""
