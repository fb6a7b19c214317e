"""The paper's published numbers (``analysis/published.csv``), for ``(paper)`` columns.

Columns ``model, method, sparsity, metric, dataset, value, source_table`` in this project's
keys and units (see ``analysis/README.md``). The numbers are the paper's protocol, so they
sit beside ``paper`` rows only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import DENSE

PUBLISHED = Path(__file__).with_name("published.csv")
PUBLISHED_COLUMNS = ["model", "method", "sparsity", "metric", "dataset", "value", "source_table"]


def load_published(path: str | Path | None = PUBLISHED) -> pd.DataFrame:
    """The paper's numbers (possibly none): columns ``model, method, sparsity, metric, ...``."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=PUBLISHED_COLUMNS)
    pub = pd.read_csv(path, dtype={"dataset": str}, keep_default_na=False, na_values=[""])
    missing = set(PUBLISHED_COLUMNS) - set(pub.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}; expected {PUBLISHED_COLUMNS}")
    pub["dataset"] = pub["dataset"].fillna("")
    pub["sparsity"] = pub["sparsity"].astype(float).round(4)
    pub["value"] = pub["value"].astype(float)
    return pub


def paper_values(pub: pd.DataFrame, index, points) -> dict:
    """``{(row, col): value}`` for paper-protocol rows (``(model, protocol, ..., method)``);
    ``points`` maps a column to its (sparsity, metric, dataset)."""
    out = {}
    if pub.empty:
        return out
    for row in index:
        model, protocol, method = row[0], row[1], row[-1]  # (setting group between)
        if protocol != "paper":
            continue
        hits = pub[(pub["model"] == model) & (pub["method"] == method)]
        for col, (s, metric, dataset) in points.items():
            hit = hits[(hits["metric"] == metric) & (hits["dataset"] == dataset)]
            if method != DENSE:
                hit = hit[np.isclose(hit["sparsity"], s)]
            if len(hit):
                out[(row, col)] = float(hit["value"].iloc[-1])
    return out
