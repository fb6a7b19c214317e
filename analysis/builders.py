"""The paper's tables, built from merged result rows; each refuses to guess.

- :func:`perplexity_table` (``table1_ppl``, Table 1): rows model x protocol x method (the
  protocols of one model are adjacent row groups), columns sparsity x dataset. The dense
  model is one run per model and protocol, its values repeated under each sparsity, and is
  never "best".
- :func:`achieved_table` (``achieved_sparsity``): the fraction of decoder-block parameters
  each method actually removed, per target sparsity (3 decimals): block methods overshoot
  under the paper's protocol, SliceGPT undershoots.
- :func:`downstream_table` (``table2_downstream``, Table 2): accuracy (percent) per task and
  their mean at 37.5%; ``table2_downstream_acc_norm`` the same for acc_norm where recorded.
- :func:`time_table` (``pruning_time``): seconds in ``method.prune`` per target sparsity.

Each takes one experiment's rows (:func:`analysis.cells.select`) and needs one configuration
per cell (:func:`analysis.cells.unique_cells` raises :class:`AmbiguousCellError` otherwise),
except for a user's own runs (``split``, default: the experiment is not published,
:func:`analysis.cells.strict`): configurations that differ in a setting become setting groups,
a ``setting`` row level before the method (e.g. ``eval.max_windows=8``), and the verdicts
compare the methods of one group.
Perplexity cells show their 95% interval, accuracy cells lm-eval's standard error
(:mod:`analysis.intervals`); bold and tied marks come from paired tests on the units the runs
share (:mod:`analysis.verdicts`: per-unit outcomes, ``items``), never from overlapping
intervals, and a table without shared units marks nothing. Pruning time keeps the plain rule
(fastest wins, equal times tie). ``(paper)`` columns appear only when the
published numbers (:mod:`analysis.published`) hold one for some cell; the notes come from
:mod:`analysis.captions`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import intervals, verdicts
from analysis.captions import (
    achieved_note,
    calib_note,
    context_notes,
    limit_notes,
    runs_note,
    smoke_note,
    threads_note,
)
from analysis.cells import (
    DENSE,
    AmbiguousCellError,
    combined_note,
    row_key,
    select,
    sparsity_label,
    split_note,
    strict,
    unique_cells,
    with_sparsity,
)
from analysis.order import PPL_DATASETS, ROW_KEY, TASKS, ordered, row_index
from analysis.published import load_published, paper_values
from analysis.render import OURS, PAPER, Table

# --- a Table's frames from {(row, col): value} cells -------------------------------------


def frame_of(cells: dict, index: list[tuple], cols: list[tuple], names: list[str]):
    if not index or not cols:
        return pd.DataFrame(dtype=float)
    data = [[cells.get((r, c), float("nan")) for c in cols] for r in index]
    return pd.DataFrame(
        data,
        index=pd.MultiIndex.from_tuples(index, names=names),
        columns=pd.MultiIndex.from_tuples(cols),
        dtype=float,
    )


def with_paper(ours: dict, paper: dict, index, base_cols, names) -> pd.DataFrame:
    """Our values under ``(*col, "ours")``; ``(*col, "paper")`` siblings only when ``paper``
    holds at least one number."""
    cells = {(r, (*c, OURS)): v for (r, c), v in ours.items()}
    cells.update({(r, (*c, PAPER)): v for (r, c), v in paper.items()})
    sources = (OURS, PAPER) if paper else (OURS,)
    cols = [(*c, s) for c in base_cols for s in sources]
    return frame_of(cells, index, cols, names)


def text_like(values: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """A frame shaped like ``values`` holding preformatted ``cells`` (``{(row, col): text}``,
    ``col`` without the ``ours`` level) under the ``ours`` columns, empty elsewhere."""
    out = pd.DataFrame("", index=values.index, columns=values.columns, dtype=object)
    for (row, col), v in cells.items():
        key = (*col, OURS)
        if row in out.index and key in out.columns:
            out.loc[row, key] = v
    return out


# --- the tables ---------------------------------------------------------------------------

PPL_TEST = (
    "a sign-flip permutation test on the per-window difference of log perplexity (exact "
    "up to 20 windows, else 9999 seeded random flips)"
)
ACC_TEST = (
    "McNemar's exact test on the shared documents (where documents come in clusters, the "
    "larger of it and a cluster-robust Wald p; avg: a Wald test on the mean of the tasks' "
    "paired differences)"
)


def _metric_rows(frame: pd.DataFrame, experiment: str | None, metric: str) -> pd.DataFrame:
    rows = select(frame, experiment)
    return with_sparsity(rows[rows["metric"] == metric])


def _split(split: bool | None, experiment) -> bool:
    """Setting groups instead of refusals: as asked, else for a user's own runs."""
    return not strict(experiment) if split is None else split


def _distinct(rows: pd.DataFrame) -> pd.DataFrame:
    """Split rows without the copies a setting group added (for the notes)."""
    cols = [c for c in ("config_hash", "run_id", "metric", "dataset") if c in rows.columns]
    return rows.drop_duplicates(cols)


def _label(r, key: list[str]) -> tuple:
    return tuple(getattr(r, k) for k in key)


def perplexity_table(
    frame: pd.DataFrame,
    datasets=None,
    sparsities=None,
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
    items: pd.DataFrame | verdicts.Units | None = None,
    split: bool | None = None,
) -> Table:
    """Table 1: perplexity, (model, protocol, method) rows, sparsity x dataset columns; each
    value with its 95% interval where the row has one.

    ``items``: the per-unit outcomes (:func:`analysis.collect.load_items`) that the paired
    verdicts read; without them only rows that kept their window NLLs can be paired.
    ``split``: setting groups instead of refusals (default: unless ``experiment`` is
    published)."""
    name = "table1_ppl"
    rows = _metric_rows(frame, experiment, "ppl")
    key = [*ROW_KEY, "sparsity", "metric", "dataset"]
    rows = unique_cells(rows, key, name, split=_split(split, experiment))
    combined = combined_note(rows)
    rows = intervals.with_bounds(rows)
    datasets = list(datasets or ordered(rows["dataset"], PPL_DATASETS))
    pruned = rows[rows["method"] != DENSE]
    sparsities = list(sparsities or sorted(pruned["sparsity"].unique()))
    levels = row_key(rows)
    index = row_index(rows, levels)
    ours, text, runs = {}, {}, {}
    fields = [*levels, "sparsity", "dataset", "value", "lo", "hi", "config_hash", "metric"]
    for r in rows[[*fields, "variant"]].itertuples(index=False):
        for s in sparsities if r.method == DENSE else [r.sparsity]:
            if s in sparsities and r.dataset in datasets:
                key = (_label(r, levels), (sparsity_label(s), r.dataset))
                ours[key], runs[key] = r.value, (verdicts.Run.of(r),)
                text[key] = intervals.interval_text(r.value, r.lo, r.hi)
    base = [(sparsity_label(s), d) for s in sparsities for d in datasets]
    points = {(sparsity_label(s), d): (s, "ppl", d) for s in sparsities for d in datasets}
    pub = load_published() if published is None else published
    values = with_paper(ours, paper_values(pub, index, points), index, base, levels)
    marks = verdicts.paired_marks(values, runs, verdicts.as_units(items), lower_is_better=True)
    has = rows["lo"].notna().any()
    how = " [low, high]: the 95% interval recorded with each row." if has else ""
    notes = [
        f"Perplexity (lower is better).{how} Dense: the unpruned model (one run), repeated "
        "under each sparsity.",
        *verdicts.marks_notes(
            marks, "window", PPL_TEST, "(≥1.23x): the perplexity ratio it could have detected"
        ),
    ]
    distinct = _distinct(rows)
    notes += [n for n in (achieved_note(distinct), combined) if n] + context_notes(distinct)
    notes += split_note(rows)
    table_text = text_like(values, text) if has else None
    return Table(
        name, "Table 1: perplexity", values, marks.best, 2, notes, table_text, marks.tied,
        marks.suffix,
    )  # fmt: skip


def per_run(
    frame: pd.DataFrame, experiment: str | None, name: str, column: str, split: bool | None
):
    """One value per pruning run: ``(runs, sparsities, row index, {(row, (label,)): value})``
    for a table of ``column`` by (model, protocol, method) and target sparsity (``split``:
    as in :func:`perplexity_table`)."""
    rows = with_sparsity(select(frame, experiment))
    runs = rows[rows["method"] != DENSE].drop_duplicates("config_hash")
    split = _split(split, experiment)
    runs = unique_cells(runs, [*ROW_KEY, "sparsity"], name, variant=False, split=split)
    levels = row_key(runs)
    cells = {
        (_label(r, levels), (sparsity_label(r.sparsity),)): getattr(r, column)
        for r in runs[[*levels, "sparsity", column]].itertuples(index=False)
    }
    return runs, sorted(runs["sparsity"].unique()), row_index(runs, levels), cells


def achieved_table(
    frame: pd.DataFrame,
    sparsities=None,
    experiment: str | None = None,
    split: bool | None = None,
) -> Table:
    """Achieved sparsity (3 decimals) per (model, protocol, method) and target sparsity."""
    name = "achieved_sparsity"
    runs, found, index, cells = per_run(frame, experiment, name, "achieved_sparsity", split)
    sparsities = list(sparsities or found)
    values = frame_of(cells, index, [(sparsity_label(s),) for s in sparsities], row_key(runs))
    notes = [
        "Fraction of decoder-block parameters removed, per target sparsity (columns). "
        "Each protocol has its own budget rule: under protocol=paper block-granular methods "
        "remove whole blocks (overshooting the target) and SliceGPT slices the embedding "
        "dimension (undershooting it); protocol=matched takes the nearest reachable budget."
    ] + split_note(runs)
    return Table(name, "Achieved sparsity", values, None, 3, notes)


def downstream_table(
    frame: pd.DataFrame,
    sparsity: float = 0.375,
    tasks=None,
    metric: str = "acc",
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
    items: pd.DataFrame | verdicts.Units | None = None,
    split: bool | None = None,
) -> Table:
    """Table 2: accuracy (percent) per task and their mean at one sparsity, ± lm-eval's
    standard error where recorded. ``metric="acc_norm"`` gives the length-normalised
    accuracy of the tasks lm-eval reports it for (``table2_downstream_acc_norm``).
    ``items``: the per-unit outcomes the paired verdicts read (none: no verdict).
    ``split``: as in :func:`perplexity_table`."""
    name = "table2_downstream" if metric == "acc" else f"table2_downstream_{metric}"
    rows = _metric_rows(frame, experiment, metric)
    rows = rows[np.isclose(rows["sparsity"], sparsity) | (rows["method"] == DENSE)]
    key = [*ROW_KEY, "sparsity", "metric", "dataset"]
    rows = unique_cells(rows, key, name, split=_split(split, experiment))
    combined = combined_note(rows)
    rows = intervals.with_bounds(rows)
    tasks = list(tasks or ordered(rows["dataset"], TASKS))
    levels = row_key(rows)
    index = row_index(rows, levels)
    ours, errors, runs = {}, {}, {}
    fields = [*levels, "dataset", "value", "se", "config_hash", "metric", "variant"]
    for r in rows[fields].itertuples(index=False):
        if r.dataset in tasks:
            key = (_label(r, levels), (r.dataset,))
            ours[key], errors[key] = 100 * r.value, 100 * r.se
            runs[key] = (verdicts.Run.of(r),)
    pub = load_published() if published is None else published
    paper = paper_values(pub, index, {(t,): (sparsity, metric, t) for t in tasks})
    paper = {k: 100 * v for k, v in paper.items()}
    for cells in (ours, paper):
        for row in index:
            got = [cells.get((row, (t,)), float("nan")) for t in tasks]
            if tasks and not np.isnan(got).any():
                cells[(row, ("avg",))] = float(np.mean(got))
                if cells is ours:
                    errors[(row, ("avg",))] = intervals.mean_stderr(
                        errors[(row, (t,))] for t in tasks
                    )
                    runs[(row, ("avg",))] = tuple(runs[(row, (t,))][0] for t in tasks)
    values = with_paper(ours, paper, index, [(t,) for t in [*tasks, "avg"]], levels)
    marks = verdicts.paired_marks(values, runs, verdicts.as_units(items), lower_is_better=False)
    has = any(not np.isnan(se) for se in errors.values())
    text = {k: intervals.stderr_text(ours[k], se) for k, se in errors.items()}
    how = " ± lm-eval's standard error (avg: sqrt(sum se^2) / tasks)." if has else ""
    notes = [
        f"Accuracy ({metric}, %) at {sparsity_label(sparsity)} sparsity (higher is "
        f"better); avg = mean over the tasks, shown when all are present.{how}",
        *verdicts.marks_notes(
            marks, "document", ACC_TEST, "(≥4.1 pts): the accuracy difference in points"
        ),
    ]
    distinct = _distinct(rows)
    notes += smoke_note(distinct) + limit_notes(distinct)
    notes += [n for n in (combined, calib_note(distinct), runs_note(distinct)) if n]
    notes += split_note(rows)
    return Table(
        name,
        f"Table 2: downstream accuracy{'' if metric == 'acc' else f' ({metric})'} at "
        f"{sparsity_label(sparsity)} sparsity",
        values,
        marks.best,
        2,
        notes,
        text_like(values, text) if has else None,
        marks.tied,
        marks.suffix,
    )


def time_table(
    frame: pd.DataFrame,
    sparsities=None,
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
    split: bool | None = None,
) -> Table:
    """Pruning time in seconds per (model, protocol, method) and target sparsity."""
    name = "pruning_time"
    runs, found, index, ours = per_run(frame, experiment, name, "prune_seconds", split)
    sparsities = list(sparsities or found)
    points = {(sparsity_label(s),): (s, "prune_seconds", "") for s in sparsities}
    pub = load_published() if published is None else published
    base = [(sparsity_label(s),) for s in sparsities]
    values = with_paper(ours, paper_values(pub, index, points), index, base, row_key(runs))
    notes = [
        "Wall-clock seconds in method.prune (lower is better), calibration loading and "
        "evaluation excluded; compare only runs on the same hardware. One measurement per "
        "run, so no method is marked fastest: a verdict needs repeated runs (the results "
        "pages test pruning time over calibration draws where there are several)."
    ] + [n for n in (runs_note(runs),) if n]
    notes += threads_note(runs) + split_note(runs)
    return Table(name, "Pruning time (seconds)", values, None, 2, notes)


def all_tables(
    frame: pd.DataFrame,
    experiment: str | None = None,
    published: pd.DataFrame | None = None,
    skipped: list[str] | None = None,
    items: pd.DataFrame | verdicts.Units | None = None,
    split: bool | None = None,
) -> list[Table]:
    """Every generic table that has rows. A table whose cells are ambiguous raises, unless
    ``skipped`` is given: then its error message is appended there and it is left out.
    ``items``: the per-unit outcomes that the paired verdicts read. ``split``: setting
    groups instead of refusals (default: unless ``experiment`` is published,
    :func:`analysis.cells.strict`)."""
    pub = load_published() if published is None else published
    units = verdicts.as_units(items)
    rows = select(frame, experiment)
    split = _split(split, experiment)
    has = set(rows["metric"].dropna())
    builders = []
    if "ppl" in has:
        builders.append(lambda: perplexity_table(rows, published=pub, items=units, split=split))
    if len(rows):
        builders.append(lambda: achieved_table(rows, split=split))
    if "acc" in has:
        builders.append(lambda: downstream_table(rows, published=pub, items=units, split=split))
    if "acc_norm" in has:
        builders.append(
            lambda: downstream_table(
                rows, metric="acc_norm", published=pub, items=units, split=split
            )
        )
    if len(rows):
        builders.append(lambda: time_table(rows, published=pub, split=split))
    tables = []
    for build in builders:
        try:
            table = build()
        except AmbiguousCellError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        if table.values.size:
            tables.append(table)
    return tables
