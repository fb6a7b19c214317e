"""The order in which tables and plots list models, protocols, methods, datasets and tasks.

Methods come in the method registry's order (:func:`twossp.methods.method_names`: dense,
2SSP, then the baselines as the paper lists them), the one list the experiment grids use too.
Other known keys come in the paper's order; keys a list does not know follow, sorted, so a new
model appears without being added here (a row the order does not know is never dropped).
"""

from __future__ import annotations

import re

import pandas as pd

from twossp import paper
from twossp.methods import method_names

METHOD_ORDER = tuple(method_names())
MODEL_ORDER = paper.MODELS
PROTOCOL_ORDER = ("paper", "matched", "unrecorded")
PPL_DATASETS = paper.PPL_DATASETS + paper.ADDED_PPL_DATASETS
TASKS = paper.TASKS
ROW_KEY = ["model", "protocol", "method"]


def ordered(values, preferred) -> list:
    """The distinct strings of ``values``: those in ``preferred`` in its order, then the
    others sorted (non-strings are dropped)."""
    values = [v for v in dict.fromkeys(values) if isinstance(v, str)]
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside ``text`` by value (``=8`` before ``=48``)."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def row_index(rows: pd.DataFrame, key: list[str] = ROW_KEY) -> list[tuple]:
    """Row labels of ``key`` in the paper's order (models, protocols, methods); other text
    levels (a setting group) in natural order."""
    orders = {"model": MODEL_ORDER, "protocol": PROTOCOL_ORDER, "method": METHOD_ORDER}
    combos = rows[key].drop_duplicates()

    def rank(col, v):
        if col in orders:
            pref = orders[col]
            return (pref.index(v), "") if v in pref else (len(pref), str(v))
        return (0, v) if not isinstance(v, str) else (1, natural_key(v))

    order = sorted(
        combos.itertuples(index=False, name=None),
        key=lambda t: tuple(rank(c, v) for c, v in zip(key, t, strict=True)),
    )
    return list(order)
