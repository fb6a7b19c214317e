"""Ablation views of 2SSP sweeps: every point of the sweep, nothing collapsed.

- **alpha** (``conf/experiment/ablation_alpha.yaml``): rows (model, protocol, sparsity),
  one column per balance ``method.alpha``, perplexity on one dataset per table
  (``ablation_alpha_<dataset>``); ``[k]`` after a value is the number of attention submodules
  stage 2 removed (the plan's ``info.n_attn``, kept by :mod:`analysis.collect`). Bold: the
  lowest perplexity of each row.
- **calibration** (``conf/experiment/ablation_calib.yaml``): rows (model, protocol,
  sparsity, calibration windows), one column per perplexity dataset, cells
  ``mean ± std (n=seeds)`` over the calibration seeds (sample standard deviation).
  The windows are those stage 1 read: ``calib_windows`` as recorded, else
  ``method.n_calib_stage1`` capped at ``calib_n_samples``. :func:`calibration_stats` gives the
  same numbers as a tidy frame (mean, std, n) for plots.

Each view applies when the experiment's 2SSP rows vary along its axis (:func:`views`), and,
like the paper tables, refuses a cell fed by configurations that differ in anything else.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import draws
from analysis.captions import context_notes
from analysis.cells import (
    AmbiguousCellError,
    select,
    sparsity_label,
    unique_cells,
    with_sparsity,
)
from analysis.collect import N_ATTN
from analysis.order import MODEL_ORDER, PPL_DATASETS, PROTOCOL_ORDER, ordered
from analysis.render import Table

ALPHA_PREFIX = "ablation_alpha_"  # + the perplexity dataset
CALIB_NAME = "ablation_calib"
ALPHA = "method.alpha"
STAGE1 = "method.n_calib_stage1"
PAPER_ALPHA = 1.5
ALPHA_KEY = ["model", "protocol", "sparsity", "alpha", "metric", "dataset"]
CALIB_GROUP = ["model", "protocol", "sparsity", "windows", "dataset"]


def twossp_ppl(frame: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """The experiment's 2SSP perplexity rows, with ``sparsity``."""
    rows = select(frame, experiment)
    rows = rows[(rows["method"] == "twossp") & (rows["metric"] == "ppl")]
    return with_sparsity(rows)


def _rank(values, preferred) -> dict:
    return {v: i for i, v in enumerate(ordered(values, preferred))}


def _sorted_rows(rows: pd.DataFrame, key: list[str]) -> list[tuple]:
    models = _rank(rows["model"], MODEL_ORDER)
    protocols = _rank(rows["protocol"], PROTOCOL_ORDER)
    combos = rows[key].drop_duplicates().itertuples(index=False, name=None)
    return sorted(combos, key=lambda t: (models[t[0]], protocols[t[1]], *t[2:]))


# --- alpha ----------------------------------------------------------------------------------


def alpha_rows(frame: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """One row per (model, protocol, sparsity, alpha, dataset); raises on ambiguity."""
    rows = twossp_ppl(frame, experiment)
    if ALPHA not in rows.columns:
        return rows.iloc[0:0].assign(alpha=[])
    rows = rows[rows[ALPHA].notna()]
    rows = rows.assign(alpha=rows[ALPHA].astype(float))
    return unique_cells(rows, ALPHA_KEY, "ablation_alpha")


def alpha_applies(frame: pd.DataFrame, experiment: str | None = None) -> bool:
    rows = twossp_ppl(frame, experiment)
    return ALPHA in rows.columns and rows[ALPHA].dropna().astype(float).nunique() > 1


def _n_attn(value) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def alpha_tables(frame: pd.DataFrame, experiment: str | None = None) -> list[Table]:
    """One table per perplexity dataset: (model, protocol, sparsity) x alpha."""
    rows = alpha_rows(frame, experiment)
    alphas = sorted(rows["alpha"].unique())
    cols = [("alpha", repr(float(a))) for a in alphas]
    names = ["model", "protocol", "sparsity"]
    tables = []
    for dataset in ordered(rows["dataset"], PPL_DATASETS):
        sub = rows[rows["dataset"] == dataset]
        index = _sorted_rows(sub, ["model", "protocol", "sparsity"])
        labels = [(m, p, sparsity_label(s)) for m, p, s in index]
        values = pd.DataFrame(np.nan, index=range(len(index)), columns=range(len(cols)))
        text = pd.DataFrame("", index=values.index, columns=values.columns)
        position = {key: i for i, key in enumerate(index)}
        for r in sub.itertuples(index=False):
            i = position[(r.model, r.protocol, r.sparsity)]
            j = alphas.index(r.alpha)
            values.iloc[i, j] = r.value
            n_attn = _n_attn(getattr(r, N_ATTN, None)) if N_ATTN in sub.columns else None
            text.iloc[i, j] = f"{r.value:.2f}" + (f" [{n_attn}]" if n_attn is not None else "")
        row_index = pd.MultiIndex.from_tuples(labels, names=names)
        col_index = pd.MultiIndex.from_tuples(cols)
        values.index = text.index = row_index
        values.columns = text.columns = col_index
        bold = values.eq(values.min(axis=1), axis=0) & values.notna()
        notes = [
            f"2SSP perplexity on {dataset} (lower is better) for each balance alpha between "
            f"stage 1 and stage 2 (the paper's default is {PAPER_ALPHA:g}); bold: lowest of "
            "each row."
        ]
        if N_ATTN in sub.columns and sub[N_ATTN].notna().any():
            notes.append("[k]: attention submodules removed by stage 2 (the run's plan).")
        notes += context_notes(sub)
        title = f"Ablation: 2SSP alpha, perplexity on {dataset}"
        tables.append(Table(f"{ALPHA_PREFIX}{dataset}", title, values, bold, 2, notes, text))
    return tables


# --- calibration size -----------------------------------------------------------------------


def calibration_rows(frame: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """2SSP perplexity rows with ``windows`` (stage-1 calibration windows read) and
    ``calib_seed`` filled in."""
    rows = twossp_ppl(frame, experiment)
    recorded = rows["calib_windows"].astype(float)
    if STAGE1 in rows.columns:
        asked = rows[STAGE1].astype(float)
        cap = rows["calib_n_samples"].astype(float)
        asked = asked.where(cap.isna() | (asked <= cap), cap)
        recorded = recorded.where(recorded.notna(), asked)
    seeds = rows["calib_seed"].astype(float)
    seeds = seeds.where(seeds.notna(), rows["seed"].astype(float)).astype("Int64")
    rows = rows.assign(windows=recorded, calib_seed=seeds)
    rows = rows[rows["windows"].notna()]
    return rows.assign(windows=rows["windows"].astype(int))


def calibration_applies(frame: pd.DataFrame, experiment: str | None = None) -> bool:
    rows = calibration_rows(frame, experiment)
    return rows["windows"].nunique() > 1 or rows["calib_seed"].nunique() > 1


def calibration_stats(frame: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """Perplexity over calibration seeds per (model, protocol, sparsity, windows, dataset):
    columns ``mean``, ``std`` (sample; NaN for one seed), ``n`` and ``seeds``."""
    rows = calibration_rows(frame, experiment)
    rows = unique_cells(rows, [*CALIB_GROUP, "calib_seed", "metric"], CALIB_NAME)
    if rows.empty:
        return pd.DataFrame(columns=[*CALIB_GROUP, "mean", "std", "n", "seeds"])
    grouped = rows.groupby(CALIB_GROUP, sort=False)
    stats = grouped["value"].agg(mean="mean", std="std", n="count").reset_index()
    seeds = grouped["calib_seed"].agg(lambda s: sorted(int(v) for v in s.dropna())).rename("seeds")
    stats = stats.merge(seeds.reset_index(), on=CALIB_GROUP)
    models = _rank(stats["model"], MODEL_ORDER)
    protocols = _rank(stats["protocol"], PROTOCOL_ORDER)
    order = stats.assign(
        _m=stats["model"].map(models), _p=stats["protocol"].map(protocols)
    ).sort_values(["_m", "_p", "sparsity", "windows", "dataset"])
    return order.drop(columns=["_m", "_p"]).reset_index(drop=True)


def _mean_std(mean: float, std: float, n: int) -> str:
    if n > 1 and not math.isnan(std):
        return f"{mean:.2f} ± {std:.2f} (n={n})"
    return f"{mean:.2f} (n={n})"


def calibration_table(frame: pd.DataFrame, experiment: str | None = None) -> Table:
    """(model, protocol, sparsity, windows) x dataset: mean ± std over calibration seeds."""
    stats = calibration_stats(frame, experiment)
    datasets = ordered(stats["dataset"], PPL_DATASETS)
    keys = list(
        dict.fromkeys(
            stats[["model", "protocol", "sparsity", "windows"]].itertuples(index=False, name=None)
        )
    )
    labels = [(m, p, sparsity_label(s), int(w)) for m, p, s, w in keys]
    names = ["model", "protocol", "sparsity", "calibration windows"]
    cols = pd.MultiIndex.from_tuples([("ppl", d) for d in datasets])
    index = pd.MultiIndex.from_tuples(labels, names=names)
    values = pd.DataFrame(np.nan, index=index, columns=cols)
    text = pd.DataFrame("", index=index, columns=cols)
    position = {k: i for i, k in enumerate(keys)}
    for r in stats.itertuples(index=False):
        i = position[(r.model, r.protocol, r.sparsity, r.windows)]
        j = datasets.index(r.dataset)
        values.iloc[i, j] = r.mean
        text.iloc[i, j] = _mean_std(r.mean, r.std, r.n)
    rows = calibration_rows(frame, experiment)
    seeds = sorted({int(s) for s in rows["calib_seed"].dropna()})
    notes = [
        "2SSP perplexity (lower is better) against the number of calibration windows stage 1 "
        f"reads; mean ± sample standard deviation over the calibration seeds "
        f"({', '.join(map(str, seeds))}); n = seeds present."
    ] + context_notes(rows)
    return Table(CALIB_NAME, "Ablation: 2SSP calibration size", values, None, 2, notes, text)


def is_view(name: str) -> bool:
    """Whether a table of that name is an ablation view (or the calibration-draws view)."""
    return name.startswith(ALPHA_PREFIX) or name in (CALIB_NAME, draws.NAME)


def views(
    frame: pd.DataFrame, experiment: str | None = None, skipped: list[str] | None = None
) -> list[Table]:
    """The ablation tables whose axis the experiment's 2SSP rows sweep (may be none).

    A view whose cells are ambiguous raises :class:`analysis.cells.AmbiguousCellError`,
    unless ``skipped`` is given: then its reason is appended there and the others are built.
    """
    builders = [lambda: draws.views(frame, experiment)]
    if alpha_applies(frame, experiment):
        builders.append(lambda: alpha_tables(frame, experiment))
    if calibration_applies(frame, experiment):
        builders.append(lambda: [calibration_table(frame, experiment)])
    out = []
    for build in builders:
        try:
            out += build()
        except AmbiguousCellError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    return out
