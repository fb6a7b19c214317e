"""Calibration draws across methods: how far a perplexity verdict moves with the calibration
sample (``conf/experiment/cpu_smollm2_seeds.yaml``).

Rows (model, protocol, sparsity, method, calibration windows); for each perplexity dataset
three columns: the value of draw 0 (the authors' file order), the mean ± sample standard
deviation over every draw present, and in how many draws no other method's row of that draw
had a lower perplexity. A method run at two calibration budgets (2SSP at the CPU budget and
at the authors' own, ``cpu_smollm2_seeds_authors``) gives two rows, told apart by the
windows it read. Applies when at least two methods were each run on several draws.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.captions import context_notes
from analysis.cells import select, sparsity_label, unique_cells, with_sparsity
from analysis.order import METHOD_ORDER, MODEL_ORDER, PPL_DATASETS, PROTOCOL_ORDER, ordered
from analysis.render import Table

ROW = ["model", "protocol", "sparsity", "method", "windows"]
SEED0 = 0


def _candidates(frame: pd.DataFrame, experiment: str | list[str] | None) -> pd.DataFrame:
    rows = with_sparsity(select(frame, experiment))
    rows = rows[(rows["metric"] == "ppl") & (rows["method"] != "dense")]
    rows = rows[rows["calib_windows"].notna()]
    seeds = rows["calib_seed"].astype(float)
    seeds = seeds.where(seeds.notna(), rows["seed"].astype(float)).astype(int)
    return rows.assign(windows=rows["calib_windows"].astype(int), calib_seed=seeds)


def draw_rows(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> pd.DataFrame:
    """Perplexity rows of pruned runs with ``windows`` (calibration windows read, as recorded)
    and ``calib_seed`` (the run seed where none was recorded); one row per cell."""
    rows = _candidates(frame, experiment)
    return unique_cells(rows, [*ROW, "dataset", "calib_seed"], "calibration_draws")


def applies(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> bool:
    """At least two methods were each run on several calibration draws."""
    spread = _candidates(frame, experiment).groupby(ROW)["calib_seed"].nunique()
    return spread[spread > 1].index.get_level_values("method").nunique() >= 2


def _wins(rows: pd.DataFrame) -> pd.Series:
    """Per (row, dataset): the draws in which no other method had a lower perplexity (among
    the rows that share the draw: same model, protocol, sparsity, dataset and seed). A
    method's other budgets are not its rivals."""
    shared = ["model", "protocol", "sparsity", "dataset", "calib_seed"]
    best = rows.groupby([*shared, "method"])["value"].min()
    wins = []
    for r in rows.itertuples(index=False):
        draw = best.loc[tuple(getattr(r, c) for c in shared)]
        rivals = draw[draw.index != r.method]
        wins.append(int(rivals.empty or r.value <= rivals.min()))
    return rows.assign(win=wins).groupby([*ROW, "dataset"])["win"].sum()


def _spread(mean: float, std: float, n: int) -> str:
    if n > 1 and not math.isnan(std):
        return f"{mean:.2f} ± {std:.2f} (n={n})"
    return f"{mean:.2f} (n={n})"


def row_order(keys: list[tuple]) -> list[tuple]:
    rank = {
        "model": {m: i for i, m in enumerate(ordered({k[0] for k in keys}, MODEL_ORDER))},
        "protocol": {p: i for i, p in enumerate(ordered({k[1] for k in keys}, PROTOCOL_ORDER))},
        "method": {m: i for i, m in enumerate(ordered({k[3] for k in keys}, METHOD_ORDER))},
    }
    return sorted(
        keys,
        key=lambda k: (
            rank["model"][k[0]],
            rank["protocol"][k[1]],
            k[2],
            rank["method"][k[3]],
            k[4],
        ),
    )


def draws_table(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> Table:
    rows = draw_rows(frame, experiment)
    datasets = ordered(rows["dataset"], PPL_DATASETS)
    grouped = rows.groupby([*ROW, "dataset"])
    stats = grouped["value"].agg(["mean", "std", "count"])
    first = rows[rows["calib_seed"] == SEED0].set_index([*ROW, "dataset"])["value"]
    wins = _wins(rows)
    keys = row_order(list(dict.fromkeys(rows[ROW].itertuples(index=False, name=None))))
    labels = [(m, p, sparsity_label(s), meth, w) for m, p, s, meth, w in keys]
    index = pd.MultiIndex.from_tuples(
        labels, names=["model", "protocol", "sparsity", "method", "calibration windows"]
    )
    parts = (f"draw {SEED0}", "mean ± std over draws", "lowest in")
    cols = pd.MultiIndex.from_tuples([(d, part) for d in datasets for part in parts])
    values = pd.DataFrame(np.nan, index=index, columns=cols)
    text = pd.DataFrame("", index=index, columns=cols)
    for i, key in enumerate(keys):
        for d in datasets:
            cell = (*key, d)
            if cell not in stats.index:
                continue
            mean, std, n = stats.loc[cell]
            j = datasets.index(d) * len(parts)
            if cell in first.index:
                values.iloc[i, j] = first.loc[cell]
            values.iloc[i, j + 1] = mean
            text.iloc[i, j + 1] = _spread(mean, std, int(n))
            text.iloc[i, j + 2] = f"{int(wins.loc[cell])}/{int(n)}"
    seeds = sorted(rows["calib_seed"].unique())
    notes = [
        f"Perplexity (lower is better) over calibration draws {', '.join(map(str, seeds))}: "
        f"draw {SEED0} reads the calibration documents in file order (the authors' runs), the "
        "others shuffle them first; mean ± sample standard deviation over the draws present "
        "(n); lowest in k/n: the draws in which no other method's row had a lower perplexity. "
        "Calibration windows: what the method read (2SSP: stage 1)."
    ] + context_notes(rows)
    return Table("calibration_draws", "Calibration draws", values, None, 2, notes, text)


def views(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> list[Table]:
    return [draws_table(frame, experiment)] if applies(frame, experiment) else []
