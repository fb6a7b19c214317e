"""Calibration draws across methods: how far a perplexity verdict moves with the calibration
sample (``conf/experiment/cpu_smollm2_seeds.yaml``).

Rows (model, protocol, sparsity, method, calibration windows); for each perplexity dataset
three columns: the value of draw 0 (the authors' file order); the geometric mean over every
draw present (``exp`` of the mean log perplexity: an arithmetic mean of perplexities is
dominated by the worst draw) with the geometric standard deviation (``×/÷``); and the paired
comparison over draws with the lowest other method (:func:`rival`): the ratio of the two
geometric means on the draws both ran, its t interval on the per-draw log ratio and a
two-sided sign-flip p (:func:`analysis.paired.draws_ratio`). Draws pair because a draw is a
seed: both methods calibrated on the same sample. With ``n`` shared draws the sign-flip p
cannot fall below ``2 / 2^n`` (0.0625 for 5), which the caption says. A method run at two
calibration budgets (2SSP at the CPU budget and at the authors' own,
``cpu_smollm2_seeds_authors``) gives two rows, told apart by the windows it read; a method's
other budget is never its rival. Applies when at least two methods were each run on several
draws.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import paired
from analysis.captions import context_notes
from analysis.cells import select, sparsity_label, unique_cells, with_sparsity
from analysis.order import METHOD_ORDER, MODEL_ORDER, PPL_DATASETS, PROTOCOL_ORDER, ordered
from analysis.render import Table
from analysis.verdicts import p_phrase

NAME = "calibration_draws"
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
    return unique_cells(rows, [*ROW, "dataset", "calib_seed"], NAME)


def applies(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> bool:
    """At least two methods were each run on several calibration draws."""
    spread = _candidates(frame, experiment).groupby(ROW)["calib_seed"].nunique()
    return spread[spread > 1].index.get_level_values("method").nunique() >= 2


def _per_draw(rows: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Per (row, dataset): perplexity by calibration seed."""
    return {
        key: sub.set_index("calib_seed")["value"].astype(float).sort_index()
        for key, sub in rows.groupby([*ROW, "dataset"])
    }


def geometric(values: pd.Series) -> tuple[float, float]:
    """``(geometric mean, geometric standard deviation)`` of positive values (the second
    NaN for a single value)."""
    logs = np.log(values.to_numpy(dtype=float))
    spread = math.exp(float(np.std(logs, ddof=1))) if logs.size > 1 else math.nan
    return math.exp(float(logs.mean())), spread


def rival(key: tuple, draws: dict[tuple, pd.Series]) -> tuple[tuple, paired.Paired] | None:
    """The lowest other method's row of the same model, protocol, sparsity and dataset
    (lowest geometric mean over the draws both ran, among rows sharing at least two draws
    with ``key``'s row), and the paired comparison with it; None when there is none."""
    mine = draws[key]
    found = []
    for other, theirs in draws.items():
        same = other[:3] == key[:3] and other[5] == key[5] and other[3] != key[3]
        shared = mine.index.intersection(theirs.index)
        if same and len(shared) >= 2:
            found.append((geometric(theirs.loc[shared])[0], other, shared))
    if not found:
        return None
    _, other, shared = min(found, key=lambda f: f[0])
    return other, paired.draws_ratio(mine.loc[shared], draws[other].loc[shared])


def _spread(mean: float, factor: float, n: int) -> str:
    if n > 1 and not math.isnan(factor):
        return f"{mean:.2f} ×/÷ {factor:.2f} (n={n})"
    return f"{mean:.2f} (n={n})"


def _versus(other: tuple, result: paired.Paired) -> str:
    """``"0.89 [0.62, 1.29] vs shortgpt (4 w), p = 0.75, n=3"``."""
    return (
        f"{result.estimate:.2f} [{result.low:.2f}, {result.high:.2f}] vs {other[3]} "
        f"({other[4]} w), {p_phrase(result.p)}, n={result.n}"
    )


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
    per_draw = _per_draw(rows)
    first = rows[rows["calib_seed"] == SEED0].set_index([*ROW, "dataset"])["value"]
    keys = row_order(list(dict.fromkeys(rows[ROW].itertuples(index=False, name=None))))
    labels = [(m, p, sparsity_label(s), meth, w) for m, p, s, meth, w in keys]
    index = pd.MultiIndex.from_tuples(
        labels, names=["model", "protocol", "sparsity", "method", "calibration windows"]
    )
    parts = (f"draw {SEED0}", "geometric mean over draws", "vs the lowest other method [95%]")
    cols = pd.MultiIndex.from_tuples([(d, part) for d in datasets for part in parts])
    values = pd.DataFrame(np.nan, index=index, columns=cols)
    text = pd.DataFrame("", index=index, columns=cols)
    for i, key in enumerate(keys):
        for d in datasets:
            cell = (*key, d)
            if cell not in per_draw:
                continue
            mean, factor = geometric(per_draw[cell])
            j = datasets.index(d) * len(parts)
            if cell in first.index:
                values.iloc[i, j] = first.loc[cell]
            values.iloc[i, j + 1] = mean
            text.iloc[i, j + 1] = _spread(mean, factor, len(per_draw[cell]))
            versus = rival(cell, per_draw)
            if versus is not None:
                values.iloc[i, j + 2] = versus[1].estimate
                text.iloc[i, j + 2] = _versus(*versus)
            else:
                text.iloc[i, j + 2] = "no rival with 2+ shared draws"
    seeds = sorted(rows["calib_seed"].unique())
    floor = 2 / 2 ** len(seeds)
    notes = [
        f"Perplexity (lower is better) over calibration draws {', '.join(map(str, seeds))}: "
        f"draw {SEED0} reads the calibration documents in file order (the authors' runs), the "
        "others shuffle them first. Geometric mean over the draws present (exp of the mean "
        "log perplexity; ×/÷ the geometric standard deviation; n draws). vs the lowest other "
        "method: the ratio of this row's geometric mean to that of the other method's row "
        "with the lowest one, on the draws both ran (w: its calibration windows), paired by "
        "draw: 95% t interval on the per-draw log ratio and a two-sided sign-flip p, exact; "
        f"with n shared draws p cannot fall below 2/2^n ({floor:.4g} for {len(seeds)}), so "
        "few draws cannot reach 0.05 by this test however consistent the order. "
        "Calibration windows: what the method read (2SSP: stage 1)."
    ] + context_notes(rows)
    return Table(NAME, "Calibration draws", values, None, 2, notes, text)


def views(frame: pd.DataFrame, experiment: str | list[str] | None = None) -> list[Table]:
    return [draws_table(frame, experiment)] if applies(frame, experiment) else []
