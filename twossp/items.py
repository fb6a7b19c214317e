"""Per-unit outcomes of a run: which windows and documents each model got how right.

A run's result rows hold aggregates (a perplexity, an accuracy). To compare two models scored
on the same units, paired, after the fact, every evaluation also keeps its units in
``<results>/items/<config_hash>.parquet``, one typed row per unit:

- a perplexity window: ``kind="window"``, the corpus in ``dataset``, its position in the
  token stream in ``unit`` (``offset = unit * seqlen``), the tokens it predicts and its mean
  NLL per token (``nll``);
- a downstream document: ``kind="document"``, the task as the run's rows name it in
  ``dataset`` (``mmlu``) and the lm-eval leaf in ``subtask`` (``mmlu_anatomy``), lm-eval's
  document id in ``unit``, whether the choice was right (``acc``, ``acc_norm``; 0 or 1), the
  gold choice (``target``), every choice's log-likelihood (``loglik``) and the document's
  ``cluster`` where documents come in clusters (:mod:`twossp.evaluation.clusters`).

A unit is identified by ``(kind, dataset, subtask, unit)``. The items file is written before
the run file, which marks a run finished.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twossp.io import atomic_write

# (name, arrow type, unit, meaning): the schema and the column reference (docs/columns.md).
ITEM_COLUMNS_DOC = [
    ("config_hash", pa.string(), None, "the run the unit was scored by"),
    ("kind", pa.string(), None, "window (perplexity) or document (lm-eval)"),
    ("dataset", pa.string(), None, "perplexity corpus, or the task as the run's rows name it"),
    ("subtask", pa.string(), None, "lm-eval leaf task (mmlu_anatomy); null for windows"),
    ("unit", pa.int64(), None, "window index in the token stream, or lm-eval's document id"),
    ("offset", pa.int64(), "tokens", "first token of the window in the stream"),
    ("tokens", pa.int64(), "tokens", "tokens the window predicts"),
    ("nll", pa.float64(), "nats/token", "mean negative log-likelihood of the window"),
    ("acc", pa.float64(), "0 or 1", "whether the highest-likelihood choice was the gold one"),
    ("acc_norm", pa.float64(), "0 or 1", "the same with length-normalised likelihoods"),
    ("target", pa.int64(), None, "index of the gold choice"),
    ("loglik", pa.list_(pa.float64()), "nats", "log-likelihood of each choice"),
    ("cluster", pa.string(), None, "cluster of related documents (twossp/evaluation/clusters.py)"),
]
ITEM_FIELDS = [(name, kind) for name, kind, _, _ in ITEM_COLUMNS_DOC]
ITEM_SCHEMA = pa.schema(ITEM_FIELDS)
ITEM_COLUMNS = ITEM_SCHEMA.names
UNIT_KEY = ["kind", "dataset", "subtask", "unit"]


def items_path(results_dir: str | Path, config_hash: str) -> Path:
    return Path(results_dir) / "items" / f"{config_hash}.parquet"


def window_items(dataset: str, result) -> list[dict]:
    """The windows of a :class:`~twossp.evaluation.perplexity.PerplexityResult`."""
    predicted = result.seqlen - 1
    return [
        {
            "kind": "window",
            "dataset": dataset,
            "unit": index,
            "offset": index * result.seqlen,
            "tokens": predicted,
            "nll": nll,
        }
        for index, nll in zip(result.window_index, result.window_nll, strict=True)
    ]


def write_items(rows: list[dict], path: str | Path, config_hash: str) -> Path:
    """Write a run's unit rows (dicts with some of :data:`ITEM_COLUMNS`), atomically."""
    columns = {name: [row.get(name) for row in rows] for name in ITEM_COLUMNS}
    columns["config_hash"] = [config_hash] * len(rows)
    table = pa.Table.from_pydict(columns, schema=ITEM_SCHEMA)
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))
    return Path(path)


def read_items(path: str | Path) -> pd.DataFrame:
    """One run's unit rows (an empty frame with the columns when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=ITEM_COLUMNS)
    with open(path, "rb") as f:
        frame = pd.read_parquet(f)
    frame["loglik"] = frame["loglik"].map(lambda v: v.tolist() if hasattr(v, "tolist") else v)
    return frame
