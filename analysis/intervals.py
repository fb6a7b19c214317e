"""Uncertainty in tables and plots: each value's 95% interval.

Where the intervals come from:

- perplexity rows carry a 95% interval in the typed columns ``ci_low`` / ``ci_high``
  (:class:`twossp.results.Metric`); rows written before those columns existed have none.
- downstream accuracies carry lm-eval's standard error in ``variant["stderr"]``
  (:func:`twossp.evaluation.downstream.to_metrics`); their interval is the normal one,
  value ± 1.96 standard errors, clipped to [0, 1]. The mean over tasks gets
  ``sqrt(sum se_i^2) / n`` (the tasks are scored on different documents, so their errors
  are taken as independent).

Intervals describe one value each; they do not decide which method is best. Whether two
intervals overlap is the wrong test for that (non-overlap of two 95% intervals is a test at
about p = 0.005, and it ignores that every method is scored on the same units): perplexity
and accuracy verdicts come from paired tests (:mod:`analysis.verdicts`). Values measured once
without an error model, such as pruning time, get no verdict in a table.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from analysis.cells import missing

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
PAPER = "paper"  # the last level of a published-number column label: never marked
TIE_MARK = "†"


def stderr(variant) -> float:
    """lm-eval's standard error from a row's ``variant`` JSON (NaN when absent)."""
    try:
        value = json.loads(variant).get("stderr") if isinstance(variant, str) else None
    except ValueError:
        return math.nan
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return math.nan


def with_bounds(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` plus ``se`` (standard error, accuracy rows), ``lo`` and ``hi`` (95% interval;
    NaN where the row has none)."""
    n = len(rows)
    nan = pd.Series(np.full(n, np.nan), index=rows.index)
    low = rows["ci_low"].astype(float) if "ci_low" in rows.columns else nan
    high = rows["ci_high"].astype(float) if "ci_high" in rows.columns else nan
    se = rows["variant"].map(stderr).astype(float) if "variant" in rows.columns else nan
    value = rows["value"].astype(float)
    normal = low.isna() & high.isna() & se.notna()  # accuracies: fractions in [0, 1]
    low = low.where(~normal, (value - Z95 * se).clip(lower=0.0))
    high = high.where(~normal, (value + Z95 * se).clip(upper=1.0))
    both = low.notna() & high.notna()
    return rows.assign(se=se, lo=low.where(both), hi=high.where(both))


def mean_stderr(errors) -> float:
    """Standard error of the mean of independent values (NaN when any is missing)."""
    errors = [float(e) for e in errors]
    if not errors or any(missing(e) for e in errors):
        return math.nan
    return math.sqrt(sum(e * e for e in errors)) / len(errors)


def interval_text(value: float, low: float, high: float, digits: int = 2) -> str:
    """``"12.34 [12.10, 12.60]"``; just the value when the interval is missing."""
    if missing(low) or missing(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def stderr_text(value: float, se: float, digits: int = 2) -> str:
    """``"61.00 ± 2.96"``; just the value when the standard error is missing."""
    if missing(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"
