"""The paper's tables from merged results, as Markdown and LaTeX. They refuse to guess.

- ``table1_ppl`` (Table 1, perplexity): rows model x protocol x method (the protocols of one
  model are adjacent row groups), columns sparsity x dataset. The dense model is one run per
  model and protocol, its values repeated under each sparsity, and is never "best".
- ``achieved_sparsity``: the fraction of decoder-block parameters each method actually
  removed, per target sparsity (3 decimals): block methods overshoot under the paper's
  protocol, SliceGPT undershoots.
- ``table2_downstream`` (Table 2): accuracy (percent) per task and their mean at 37.5%.
- ``pruning_time``: seconds in ``method.prune`` per target sparsity.

A table shows one experiment's rows, chosen by membership (the ``experiments`` column that
:mod:`analysis.collect` writes; ``experiment`` for rows without it), and every cell must come
from exactly one configuration (:mod:`analysis.cells`). A cell fed by several configurations
(an ablation sweep, two experiments mixed) raises :class:`AmbiguousCellError` naming the cell
and the settings in which the configurations differ; ablation sweeps have their own views
(:mod:`analysis.ablations`). Runs of one configuration that differ only in what they evaluated
share their cells.

Perplexity cells show their 95% interval, accuracy cells lm-eval's standard error. Bold: the
best value of each column within each model and protocol (lowest perplexity and time, highest
accuracy), only when its interval overlaps no other method's; else the methods tied with it
are marked † (:mod:`analysis.intervals`). ``(paper)`` columns beside ours appear only when
``analysis/published.csv`` has a number for some cell of the table (paper-protocol rows).
Each table's notes say what its rows were computed with (evaluation windows and length,
calibration read, device and dtype), read from the rows themselves.

    python -m analysis.tables [--results results/results.parquet] [--out results/tables]
                              [--experiment cpu_demo]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.cells import (
    DENSE,
    AmbiguousCellError,
    combined_note,
    missing,
    select,
    sparsity_label,
    unique_cells,
    with_sparsity,
)
from analysis.collect import EXPERIMENTS, load

log = logging.getLogger(__name__)

PUBLISHED = Path(__file__).with_name("published.csv")
PUBLISHED_COLUMNS = ["model", "method", "sparsity", "metric", "dataset", "value", "source_table"]
METHOD_ORDER = ("dense", "twossp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt")
MODEL_ORDER = ("llama2_7b", "mistral_7b", "qwen2_5_7b", "phi3_medium")
# Models too small to answer the downstream tasks above chance (what makes them so): their
# accuracies are labelled smoke tests, never results.
SMOKE_TEST_MODELS = {"stories260k": "260K parameters"}
PROTOCOL_ORDER = ("paper", "matched", "unrecorded")
PPL_DATASETS = ("wikitext2", "c4", "fineweb_edu", "ptb")
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu")
ROW_KEY = ["model", "protocol", "method"]
OURS, PAPER = "ours", "paper"
PAPER_SEQLEN = 2048  # the paper's evaluation and calibration window, named in notes only


@dataclass
class Table:
    """A table to render: numeric values, a bold mask and how to print them.

    ``values`` has a row index with named levels (the last one varies fastest, e.g. method)
    and tuple column labels; for tables with a ``(paper)`` sibling the last level of each
    label is ``"ours"`` or ``"paper"``. ``text`` (same shape, optional) holds preformatted
    cells, e.g. ``"mean ± std (n=3)"``, used where not empty. ``tied`` (optional) marks cells
    tied with the best (:func:`analysis.intervals.marks`), printed with a dagger.
    """

    name: str
    title: str
    values: pd.DataFrame
    bold: pd.DataFrame | None = None
    digits: int = 2
    notes: list[str] = field(default_factory=list)
    text: pd.DataFrame | None = None
    tied: pd.DataFrame | None = None

    def cell(self, i: int, j: int, bold_fmt: str = "{}", escape=str, tie_fmt: str = "{}†") -> str:
        text = self.text.iloc[i, j] if self.text is not None else ""
        if not text:
            v = self.values.iloc[i, j]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            text = f"{v:.{self.digits}f}"
        bold = self.bold is not None and bool(self.bold.iloc[i, j])
        text = escape(text)
        if self.tied is not None and bool(self.tied.iloc[i, j]):
            text = tie_fmt.format(text)
        return bold_fmt.format(text) if bold else text

    def _cells(self, i: int, bold_fmt: str, escape=str, tie_fmt: str = "{}†") -> list[str]:
        n = self.values.shape[1]
        return [self.cell(i, j, bold_fmt, escape, tie_fmt) for j in range(n)]

    @property
    def row_names(self) -> list[str]:
        return [str(n) for n in self.values.index.names]

    def _labels(self) -> list[tuple]:
        """Column labels without the ``ours`` level when no ``paper`` column exists."""
        cols = [c if isinstance(c, tuple) else (c,) for c in self.values.columns]
        if cols and all(c[-1] in (OURS, PAPER) for c in cols):
            if all(c[-1] == OURS for c in cols):
                return [c[:-1] for c in cols]
        return cols

    def headers(self) -> list[str]:
        out = []
        for col in self._labels():
            if col[-1] == PAPER:
                out.append("(paper)")
            else:
                out.append(" ".join(str(p) for p in (col[:-1] if col[-1] == OURS else col)))
        return out

    def to_markdown(self) -> str:
        names = self.row_names
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join([*names, *self.headers()]) + " |",
            "|" + "---|" * len(names) + "---:|" * self.values.shape[1],
        ]
        for i, row in enumerate(self.values.index):
            row = row if isinstance(row, tuple) else (row,)
            cells = [*map(str, row), *self._cells(i, "**{}**")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_latex(self) -> str:
        names = self.row_names
        cols = self._labels()
        depth = max(len(c) for c in cols)
        cols = [c + ("",) * (depth - len(c)) for c in cols]
        k = len(names)
        out = [
            f"% {self.title}",
            *[f"% {n}" for n in self.notes],
            "\\begin{tabular}{" + "l" * k + "r" * len(cols) + "}",
            "\\toprule",
        ]
        for level in range(depth):
            cells, rules, i = [""] * k, [], 0
            while i < len(cols):
                j = i
                while j + 1 < len(cols) and cols[j + 1][: level + 1] == cols[i][: level + 1]:
                    j += 1
                label = "(paper)" if cols[i][level] == PAPER else _tex(cols[i][level])
                label = "" if cols[i][level] == OURS else label
                span = j - i + 1
                cells.append(f"\\multicolumn{{{span}}}{{c}}{{{label}}}" if span > 1 else label)
                if span > 1 and level < depth - 1:
                    rules.append(f"\\cmidrule(lr){{{i + k + 1}-{j + k + 1}}}")
                i = j + 1
            if level == depth - 1:
                cells[:k] = [_tex(n) for n in names]
            out.append(" & ".join(cells) + " \\\\")
            out.extend(rules)
        out.append("\\midrule")
        previous = None
        for i, row in enumerate(self.values.index):
            row = row if isinstance(row, tuple) else (row,)
            if previous is not None and row[:-1] != previous:
                out.append("\\midrule")
            previous = row[:-1]
            cells = self._cells(i, "\\textbf{{{}}}", _tex, "{}$^\\dagger$")
            out.append(" & ".join([*map(_tex, row), *cells]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(out) + "\n"


def _tex(text) -> str:
    text = str(text)
    for a, b in (
        ("\\", "\\textbackslash{}"),
        ("_", "\\_"),
        ("%", "\\%"),
        ("&", "\\&"),
        ("#", "\\#"),
        ("±", "$\\pm$"),
    ):
        text = text.replace(a, b)
    return text


def ordered(values, preferred) -> list:
    values = [v for v in dict.fromkeys(values) if isinstance(v, str)]
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


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


# --- notes: what the rows were computed with ----------------------------------------------


def _span(values) -> str:
    values = sorted({int(v) for v in values if not missing(v)})
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def eval_note(rows: pd.DataFrame) -> str | None:
    """How the perplexity rows were scored: windows x tokens per dataset."""
    ppl = rows[rows["metric"] == "ppl"]
    if ppl.empty:
        return None
    parts, seqlens = {}, set()
    for dataset in ordered(ppl["dataset"], PPL_DATASETS):
        variants = [json.loads(v) for v in ppl.loc[ppl["dataset"] == dataset, "variant"]]
        windows = _span(v.get("windows") for v in variants)
        seqlen = _span(v.get("seqlen") for v in variants)
        seqlens |= {v.get("seqlen") for v in variants}
        parts[dataset] = (
            f"{windows} x {seqlen}" if windows != "?" else f"? x {seqlen} (count not recorded)"
        )
    if len(set(parts.values())) == 1:
        text = f"each dataset {next(iter(parts.values()))}"
    else:
        text = ", ".join(f"{d} {p}" for d, p in parts.items())
    paper = (
        f" (the paper scores every window of {PAPER_SEQLEN} tokens)"
        if seqlens != {PAPER_SEQLEN}
        else ""
    )
    return f"Perplexity scored on windows x tokens: {text}{paper}."


def calib_note(rows: pd.DataFrame) -> str | None:
    """What calibration the pruned rows read: dataset, windows x tokens per method, seeds."""
    runs = rows.drop_duplicates("config_hash")
    runs = runs[runs["calib_dataset"].notna() & (runs["method"] != DENSE)]
    if runs.empty:
        return None
    per_method = [
        f"{m} {_span(sub['calib_windows'])} x {_span(sub['calib_seqlen'])}"
        for m in ordered(runs["method"], METHOD_ORDER)
        for sub in [runs[runs["method"] == m]]
    ]
    datasets = ", ".join(ordered(runs["calib_dataset"], ()))
    seeds = sorted({int(s) for s in runs["calib_seed"].dropna()})
    seed_text = f"; calibration seed{'s' if len(seeds) > 1 else ''} {_list(seeds)}"
    seqlens = {int(s) for s in runs["calib_seqlen"].dropna()}
    paper = f" (the paper: windows of {PAPER_SEQLEN} tokens)" if seqlens - {PAPER_SEQLEN} else ""
    return (
        f"Calibration read from {datasets}, windows x tokens: {', '.join(per_method)}"
        f"{seed_text}{paper}."
    )


def _list(values) -> str:
    values = list(values)
    if len(values) > 6:
        return f"{values[0]}..{values[-1]} ({len(values)})"
    return ", ".join(map(str, values))


def _known(value) -> str:
    return "?" if missing(value) or value == "" else str(value)


def runs_note(rows: pd.DataFrame) -> str | None:
    runs = rows.drop_duplicates("config_hash")
    if runs.empty:
        return None
    kinds = sorted(
        {f"{_known(d)} / {_known(t)}" for d, t in zip(runs["device"], runs["dtype"], strict=True)}
    )
    text = f"Computed on {', '.join(kinds)} (device / dtype)."
    if (runs["protocol"] == "unrecorded").any():
        text += (
            " Protocol 'unrecorded': run files of the first schema, from before protocols "
            "and calibration were recorded."
        )
    return text


def achieved_note(rows: pd.DataFrame, tolerance: float = 0.005) -> str | None:
    runs = rows.drop_duplicates("config_hash")
    runs = runs[runs["method"] != DENSE]
    gap = (runs["achieved_sparsity"] - runs["target_sparsity"]).abs()
    if runs.empty or not (gap > tolerance).any():
        return None
    return (
        f"Columns are target sparsities; {int((gap > tolerance).sum())} of {len(runs)} runs "
        f"are more than {tolerance:g} away from their target (see achieved_sparsity)."
    )


def context_notes(rows: pd.DataFrame) -> list[str]:
    return [n for n in (eval_note(rows), calib_note(rows), runs_note(rows)) if n]


# --- assembling tables ----------------------------------------------------------------------


def row_index(rows: pd.DataFrame, key: list[str] = ROW_KEY) -> list[tuple]:
    """Row labels of ``key`` in the paper's order (models, protocols, methods)."""
    orders = {"model": MODEL_ORDER, "protocol": PROTOCOL_ORDER, "method": METHOD_ORDER}
    combos = rows[key].drop_duplicates()

    def rank(col, v):
        if col in orders:
            pref = orders[col]
            return (pref.index(v), "") if v in pref else (len(pref), str(v))
        return (0, v) if not isinstance(v, str) else (1, v)

    order = sorted(
        combos.itertuples(index=False, name=None),
        key=lambda t: tuple(rank(c, v) for c, v in zip(key, t, strict=True)),
    )
    return list(order)


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


def paper_values(pub: pd.DataFrame, index, points) -> dict:
    """``{(row, col): value}`` for paper-protocol rows; ``points`` maps a column to its
    (sparsity, metric, dataset)."""
    out = {}
    if pub.empty:
        return out
    for row in index:
        model, protocol, method = row
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


def frame_like(values: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """A frame shaped like ``values`` holding ``cells`` (``{(row, col): value}``, ``col``
    without the ``ours`` level) under the ``ours`` columns, NaN elsewhere."""
    out = pd.DataFrame(np.nan, index=values.index, columns=values.columns, dtype=float)
    for (row, col), v in cells.items():
        key = (*col, OURS)
        if row in out.index and key in out.columns:
            out.loc[row, key] = v
    return out


def text_like(values: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Like :func:`frame_like` for preformatted text (empty where not given)."""
    out = pd.DataFrame("", index=values.index, columns=values.columns, dtype=object)
    for (row, col), v in cells.items():
        key = (*col, OURS)
        if row in out.index and key in out.columns:
            out.loc[row, key] = v
    return out


def smoke_note(rows: pd.DataFrame) -> list[str]:
    """A warning for models too small to answer the downstream tasks above chance."""
    smoke = [m for m in ordered(rows["model"], MODEL_ORDER) if m in SMOKE_TEST_MODELS]
    if not smoke:
        return []
    named = ", ".join(f"{m} ({SMOKE_TEST_MODELS[m]})" for m in smoke)
    return [
        f"Smoke test, not a result: {named} answers these tasks at chance level; its rows "
        "check that the pipeline runs."
    ]


def _metric_rows(frame: pd.DataFrame, experiment: str | None, metric: str) -> pd.DataFrame:
    rows = select(frame, experiment)
    return with_sparsity(rows[rows["metric"] == metric])


def _limit_notes(frame: pd.DataFrame) -> list[str]:
    """A warning when downstream rows come from a ``limit``-ed (subsampled) evaluation."""
    limits = {json.loads(v).get("limit") for v in frame["variant"].dropna()} - {None}
    if not limits:
        return []
    return [
        f"Subsampled: at most {', '.join(map(str, sorted(limits)))} documents per task "
        "(lm-eval limit); not comparable with full-set numbers."
    ]


def perplexity_table(
    frame: pd.DataFrame,
    datasets=None,
    sparsities=None,
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> Table:
    """Table 1: perplexity, (model, protocol, method) rows, sparsity x dataset columns; each
    value with its 95% interval where the row has one."""
    name = "table1_ppl"
    rows = _metric_rows(frame, experiment, "ppl")
    rows = unique_cells(rows, [*ROW_KEY, "sparsity", "metric", "dataset"], name)
    combined = combined_note(rows)
    rows = intervals.with_bounds(rows)
    datasets = list(datasets or ordered(rows["dataset"], PPL_DATASETS))
    pruned = rows[rows["method"] != DENSE]
    sparsities = list(sparsities or sorted(pruned["sparsity"].unique()))
    index = row_index(rows)
    ours, low, high, text = {}, {}, {}, {}
    for r in rows[[*ROW_KEY, "sparsity", "dataset", "value", "lo", "hi"]].itertuples(index=False):
        for s in sparsities if r.method == DENSE else [r.sparsity]:
            if s in sparsities and r.dataset in datasets:
                key = ((r.model, r.protocol, r.method), (sparsity_label(s), r.dataset))
                ours[key], low[key], high[key] = r.value, r.lo, r.hi
                text[key] = intervals.interval_text(r.value, r.lo, r.hi)
    base = [(sparsity_label(s), d) for s in sparsities for d in datasets]
    points = {(sparsity_label(s), d): (s, "ppl", d) for s in sparsities for d in datasets}
    pub = load_published() if published is None else published
    values = with_paper(ours, paper_values(pub, index, points), index, base, ROW_KEY)
    best, tied = intervals.marks(values, frame_like(values, low), frame_like(values, high), True)
    has = rows["lo"].notna().any()
    how = "[low, high]: the 95% interval recorded with each row" if has else None
    notes = [
        f"Perplexity (lower is better); {intervals.marks_note(how, bool(tied.any().any()))} "
        "Dense: the unpruned model (one run), repeated under each sparsity."
    ]
    notes += [n for n in (achieved_note(rows), combined) if n] + context_notes(rows)
    table_text = text_like(values, text) if has else None
    return Table(name, "Table 1: perplexity", values, best, 2, notes, table_text, tied)


def per_run(frame: pd.DataFrame, experiment: str | None, name: str, column: str):
    """One value per pruning run: ``(runs, sparsities, row index, {(row, (label,)): value})``
    for a table of ``column`` by (model, protocol, method) and target sparsity."""
    rows = with_sparsity(select(frame, experiment))
    runs = rows[rows["method"] != DENSE].drop_duplicates("config_hash")
    runs = unique_cells(runs, [*ROW_KEY, "sparsity"], name, variant=False)
    cells = {
        ((r.model, r.protocol, r.method), (sparsity_label(r.sparsity),)): getattr(r, column)
        for r in runs[[*ROW_KEY, "sparsity", column]].itertuples(index=False)
    }
    return runs, sorted(runs["sparsity"].unique()), row_index(runs), cells


def achieved_table(frame: pd.DataFrame, sparsities=None, experiment: str | None = None) -> Table:
    """Achieved sparsity (3 decimals) per (model, protocol, method) and target sparsity."""
    name = "achieved_sparsity"
    _, found, index, cells = per_run(frame, experiment, name, "achieved_sparsity")
    sparsities = list(sparsities or found)
    values = frame_of(cells, index, [(sparsity_label(s),) for s in sparsities], ROW_KEY)
    notes = [
        "Fraction of decoder-block parameters removed, per target sparsity (columns). "
        "Each protocol has its own budget rule: under protocol=paper block-granular methods "
        "remove whole blocks (overshooting the target) and SliceGPT slices the embedding "
        "dimension (undershooting it); protocol=matched takes the nearest reachable budget."
    ]
    return Table(name, "Achieved sparsity", values, None, 3, notes)


def downstream_table(
    frame: pd.DataFrame,
    sparsity: float = 0.375,
    tasks=None,
    metric: str = "acc",
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> Table:
    """Table 2: accuracy (percent) per task and their mean at one sparsity, ± lm-eval's
    standard error where recorded."""
    name = "table2_downstream"
    rows = _metric_rows(frame, experiment, metric)
    rows = rows[np.isclose(rows["sparsity"], sparsity) | (rows["method"] == DENSE)]
    rows = unique_cells(rows, [*ROW_KEY, "sparsity", "metric", "dataset"], name)
    combined = combined_note(rows)
    rows = intervals.with_bounds(rows)
    tasks = list(tasks or ordered(rows["dataset"], TASKS))
    index = row_index(rows)
    ours, errors = {}, {}
    for r in rows[[*ROW_KEY, "dataset", "value", "se"]].itertuples(index=False):
        if r.dataset in tasks:
            key = ((r.model, r.protocol, r.method), (r.dataset,))
            ours[key], errors[key] = 100 * r.value, 100 * r.se
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
    values = with_paper(ours, paper, index, [(t,) for t in [*tasks, "avg"]], ROW_KEY)
    z = intervals.Z95
    low = {k: max(ours[k] - z * se, 0.0) for k, se in errors.items()}
    high = {k: min(ours[k] + z * se, 100.0) for k, se in errors.items()}
    best, tied = intervals.marks(values, frame_like(values, low), frame_like(values, high), False)
    has = any(not np.isnan(se) for se in errors.values())
    text = {k: intervals.stderr_text(ours[k], se) for k, se in errors.items()}
    how = (
        "± lm-eval's standard error (avg: sqrt(sum se^2) / tasks), 95% interval ± 1.96 se"
        if has
        else None
    )
    notes = [
        f"Accuracy ({metric}, %) at {sparsity_label(sparsity)} sparsity (higher is "
        "better); avg = mean over the tasks, shown when all are present; "
        + intervals.marks_note(how, bool(tied.any().any()))
    ]
    notes += smoke_note(rows) + _limit_notes(rows)
    notes += [n for n in (combined, calib_note(rows), runs_note(rows)) if n]
    return Table(
        name,
        f"Table 2: downstream accuracy at {sparsity_label(sparsity)} sparsity",
        values,
        best,
        2,
        notes,
        text_like(values, text) if has else None,
        tied,
    )


def time_table(
    frame: pd.DataFrame,
    sparsities=None,
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> Table:
    """Pruning time in seconds per (model, protocol, method) and target sparsity."""
    name = "pruning_time"
    runs, found, index, ours = per_run(frame, experiment, name, "prune_seconds")
    sparsities = list(sparsities or found)
    points = {(sparsity_label(s),): (s, "prune_seconds", "") for s in sparsities}
    pub = load_published() if published is None else published
    base = [(sparsity_label(s),) for s in sparsities]
    values = with_paper(ours, paper_values(pub, index, points), index, base, ROW_KEY)
    notes = [
        "Wall-clock seconds in method.prune (lower is better), calibration loading and "
        "evaluation excluded; compare only runs on the same hardware."
    ] + [n for n in (runs_note(runs),) if n]
    if "threads" in runs.columns and runs["threads"].notna().any():  # what a CPU time depends on
        notes.append(f"CPU threads: {_list(sorted({int(n) for n in runs['threads'].dropna()}))}.")
    best, tied = intervals.marks(values, None, None, True)
    if tied.any().any():
        notes[0] += f" {intervals.TIE_MARK}: equal fastest times."
    return Table(name, "Pruning time (seconds)", values, best, 2, notes, None, tied)


def all_tables(
    frame: pd.DataFrame,
    experiment: str | None = None,
    published: pd.DataFrame | None = None,
    skipped: list[str] | None = None,
) -> list[Table]:
    """Every generic table that has rows. A table whose cells are ambiguous raises, unless
    ``skipped`` is given: then its error message is appended there and it is left out (used
    when an ablation view renders the same rows)."""
    pub = load_published() if published is None else published
    rows = select(frame, experiment)
    has = set(rows["metric"].dropna())
    builders = []
    if "ppl" in has:
        builders.append(lambda: perplexity_table(rows, published=pub))
    if len(rows):
        builders.append(lambda: achieved_table(rows))
    if "acc" in has:
        builders.append(lambda: downstream_table(rows, published=pub))
    if len(rows):
        builders.append(lambda: time_table(rows, published=pub))
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


def render(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """Write each table as ``<name>.md`` and ``<name>.tex`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        for suffix, text in ((".md", t.to_markdown()), (".tex", t.to_latex())):
            path = out_dir / f"{t.name}{suffix}"
            path.write_text(text)
            paths.append(path)
    return paths


def experiment_tables(
    frame: pd.DataFrame,
    experiment: str | None,
    published: pd.DataFrame | None = None,
    skipped: list[str] | None = None,
) -> list[Table]:
    """The ablation views that apply to ``experiment``'s rows, then the generic tables.

    When an ablation view applies, generic tables that its sweep makes ambiguous are left
    out (their reason appended to ``skipped``); otherwise ambiguity raises.
    """
    from analysis import ablations

    views = ablations.views(frame, experiment)
    notes: list[str] = []
    generic = all_tables(frame, experiment, published, notes if views else None)
    if skipped is not None:
        skipped.extend(notes)
    return views + generic


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Render the paper's tables (md + tex).")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="merged results file (default: $TWOSSP_RESULTS_FILE or results/results.parquet)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: <results dir>/tables")
    parser.add_argument("--experiment", default=None, help="only rows of this experiment")
    parser.add_argument("--published", type=Path, default=PUBLISHED)
    parser.add_argument("--only", nargs="+", default=None, help="print only these tables")
    args = parser.parse_args(argv)
    from analysis.collect import default_results_dir

    out = args.out or default_results_dir() / "tables"
    frame = load(args.results)
    if args.experiment is not None and select(frame, args.experiment).empty:
        known = sorted({e for es in frame.get(EXPERIMENTS, []) for e in es} or [])
        print(
            f"[tables] error: no rows of experiment {args.experiment!r}; present: {known}",
            file=sys.stderr,
        )
        sys.exit(2)
    skipped: list[str] = []
    try:
        tables = experiment_tables(frame, args.experiment, load_published(args.published), skipped)
    except AmbiguousCellError as exc:
        print(f"[tables] error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.only:
        tables = [t for t in tables if t.name in args.only]
    paths = render(tables, out)
    for t in tables:
        print(t.to_markdown())
    from analysis import inference  # the speed-up table, when runs recorded inference rows

    try:
        paths += inference.render_tables(select(frame, args.experiment), out)
    except AmbiguousCellError as exc:
        print(f"[tables] inference_speedup not rendered: {exc}")
    if skipped:
        names = ", ".join(reason.split(":", 1)[0] for reason in skipped)
        print(
            f"[tables] not rendered: {names}; their cells would hold several points of the "
            f"sweep, which the ablation views show (first: {skipped[0].split('; render')[0]})"
        )
    print(f"[tables] wrote {len(paths)} files to {out}")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
