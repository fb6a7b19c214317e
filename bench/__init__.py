"""Efficiency benchmarks of the harness (``make bench`` / ``python -m bench.run``).

Every figure is a ratio of two things measured in the same run on the same machine; see
:mod:`bench.run` for what is measured and :mod:`twossp.evaluation.efficiency` for how.
"""
