"""Verdicts in tables from paired tests: which units two runs share, and bold / tied marks.

Units (:class:`Units`). Two runs are compared on the units both scored, read from the merged
per-unit outcomes (:func:`analysis.collect.load_items`, one row per window or document and
run, keyed by config hash):

- a perplexity window is ``(dataset, unit, offset, tokens)``: its index in the token
  stream, where it starts and how many tokens it predicts, so windows cut with a different
  length never pair; the value is its mean NLL;
- a document is ``(dataset, subtask, unit)`` (lm-eval's leaf task and document id); the
  value is its 0/1 ``acc`` or ``acc_norm``; its ``cluster`` (WinoGrande twin pair, MMLU
  subject, HellaSwag activity) makes the interval and the detectable difference
  cluster-robust.

Runs written before per-unit records existed still carry each perplexity row's window NLLs
(``variant["window_nll"]``, in scored order): two such rows are paired window by window when
their evaluation settings agree (the ``variant`` without its measurements: dataset, source,
window length, ``max_windows``, windows scored...), so they scored the same window list.
Accuracy rows have no such fallback: without items, no accuracy verdict.

Marks (:func:`paired_marks`): per column and row block (model, protocol), the pruned methods
(never dense) are judged by :func:`analysis.paired.best_of`, the intersection-union rule;
bold = best, ``†`` = tied, with the detectable difference of the design beside each tied
cell (:func:`detectable_text`). A column with one pruned method, or whose runs share no
units, gets no mark; :func:`marks_notes` says so in the caption, with the rule, the level,
the units paired and the Holm-adjusted count of columns each method wins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import paired
from analysis.cells import DENSE, VARIANT_RESULTS, missing
from analysis.intervals import TIE_MARK
from analysis.render import OURS, PAPER

WINDOW, DOCUMENT = "window", "document"


@dataclass(frozen=True)
class Run:
    """What one table value was computed from: a run (config hash) and its row."""

    config_hash: str
    metric: str  # "ppl", "acc" or "acc_norm"
    dataset: str
    variant: str | None = None

    @classmethod
    def of(cls, row) -> Run:
        """From a result row (a Series or a named tuple with these fields)."""
        variant = getattr(row, "variant", None)
        return cls(
            str(row.config_hash),
            str(row.metric),
            str(row.dataset),
            variant if isinstance(variant, str) else None,
        )

    @property
    def kind(self) -> str:
        return WINDOW if self.metric == "ppl" else DOCUMENT


def _settings(variant: str | None) -> str | None:
    """A perplexity row's evaluation settings (its variant without the measurements)."""
    try:
        v = json.loads(variant) if variant else None
    except ValueError:
        return None
    if not isinstance(v, dict):
        return None
    return json.dumps({k: x for k, x in v.items() if k not in VARIANT_RESULTS}, sort_keys=True)


def _window_nll(variant: str | None) -> list[float] | None:
    try:
        values = json.loads(variant).get("window_nll") if variant else None
    except (ValueError, AttributeError):
        return None
    if not isinstance(values, list) or not values:
        return None
    return [float(x) for x in values]


def _filled(column: pd.Series, blank) -> list:
    return [blank if missing(v) else v for v in column]


class Units:
    """Per-unit outcomes by run, and the paired comparison of two runs (cached).

    Args:
        items: the merged per-unit outcomes (columns of :data:`twossp.items.ITEM_COLUMNS`);
            None or empty: only the perplexity rows' own window NLLs can be paired.
    """

    def __init__(self, items: pd.DataFrame | None = None):
        self._by_run: dict[str, pd.DataFrame] = {}
        if items is not None and len(items):
            self._by_run = {str(h): g for h, g in items.groupby("config_hash", sort=False)}
        self._outcomes: dict[tuple, pd.DataFrame | None] = {}
        self._compared: dict[tuple, paired.Paired | None] = {}

    def outcomes(self, run: Run) -> pd.DataFrame | None:
        """The run's units of this metric and dataset from the items: ``value`` (NLL or
        0/1) and ``cluster`` (None for windows), indexed by the unit key; None when the
        run kept none."""
        key = (run.config_hash, run.metric, run.dataset)
        if key not in self._outcomes:
            self._outcomes[key] = self._read(run)
        return self._outcomes[key]

    def _read(self, run: Run) -> pd.DataFrame | None:
        items = self._by_run.get(run.config_hash)
        if items is None:
            return None
        rows = items[(items["kind"] == run.kind) & (items["dataset"] == run.dataset)]
        column = "nll" if run.kind == WINDOW else run.metric
        if rows.empty or column not in rows.columns:
            return None
        rows = rows[rows[column].notna()]
        if rows.empty:
            return None
        if run.kind == WINDOW:
            index = pd.MultiIndex.from_arrays(
                [_filled(rows[c], -1) for c in ("unit", "offset", "tokens")],
                names=["unit", "offset", "tokens"],
            )
            clusters = [None] * len(rows)
        else:
            index = pd.MultiIndex.from_arrays(
                [_filled(rows["subtask"], ""), _filled(rows["unit"], -1)],
                names=["subtask", "unit"],
            )
            clusters = _filled(rows["cluster"], None) if "cluster" in rows else [None] * len(rows)
        values = rows[column].astype(float).to_numpy()
        out = pd.DataFrame({"value": values, "cluster": clusters}, index=index)
        return out[~out.index.duplicated(keep="last")]

    def pair(self, a: Run, b: Run) -> pd.DataFrame | None:
        """The units both runs scored: ``a``, ``b`` (their values) and ``cluster`` (from
        ``a``); None when they share none."""
        ua, ub = self.outcomes(a), self.outcomes(b)
        if (ua is None or ub is None) and a.kind == WINDOW:
            return self._pair_windows_from_rows(a, b)
        if ua is None or ub is None:
            return None
        joined = ua.join(ub[["value"]], how="inner", lsuffix="_a", rsuffix="_b")
        if joined.empty:
            return None
        return pd.DataFrame(
            {"a": joined["value_a"], "b": joined["value_b"], "cluster": joined["cluster"]}
        )

    @staticmethod
    def _pair_windows_from_rows(a: Run, b: Run) -> pd.DataFrame | None:
        """Window NLLs of two perplexity rows, paired by position when both rows were
        scored with the same evaluation settings (the same window list)."""
        na, nb = _window_nll(a.variant), _window_nll(b.variant)
        sa = _settings(a.variant)
        if na is None or nb is None or sa is None or sa != _settings(b.variant):
            return None
        if len(na) != len(nb):
            return None
        return pd.DataFrame({"a": na, "b": nb, "cluster": [None] * len(na)})

    def compare(self, a: Run, b: Run) -> paired.Paired | None:
        """Run ``a`` against run ``b`` on their shared units: the perplexity ratio or the
        accuracy difference (:mod:`analysis.paired`); None with fewer than two shared
        units."""
        key = (a, b)
        if key not in self._compared:
            self._compared[key] = self._compare(a, b)
        return self._compared[key]

    def _compare(self, a: Run, b: Run) -> paired.Paired | None:
        if a.metric != b.metric or a.dataset != b.dataset:
            raise ValueError(f"cannot pair {a.metric}/{a.dataset} with {b.metric}/{b.dataset}")
        units = self.pair(a, b)
        if units is None or len(units) < 2:
            return None
        if a.kind == WINDOW:
            return paired.perplexity_ratio(units["a"], units["b"])
        clusters = None
        if units["cluster"].notna().any():
            clusters = [
                f"unit:{i}" if missing(c) else str(c) for i, c in enumerate(units["cluster"])
            ]
        return paired.accuracy_difference(units["a"], units["b"], clusters)

    def compare_cells(self, a: tuple[Run, ...], b: tuple[Run, ...]) -> paired.Paired | None:
        """Two table cells: one run each, or one run per task for a mean over tasks (the
        tasks' differences combined, :func:`analysis.paired.combine_differences`)."""
        if len(a) != len(b) or not a:
            return None
        parts = [self.compare(x, y) for x, y in zip(a, b, strict=True)]
        if any(p is None for p in parts):
            return None
        return parts[0] if len(parts) == 1 else paired.combine_differences(parts)


def as_units(items) -> Units:
    """``items`` as :class:`Units` (a frame of items, None, or Units already)."""
    return items if isinstance(items, Units) else Units(items)


def p_text(p: float) -> str:
    """A p value as tables print it: ``"< 0.001"``, ``"0.003"``, ``"0.31"`` (empty for
    NaN)."""
    if missing(p) or math.isnan(p):
        return ""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def p_phrase(p: float) -> str:
    """``"p < 0.001"`` or ``"p = 0.03"``."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def detectable_text(value: float, scale: str) -> str:
    """The detectable difference printed beside a tie: ``(≥1.23x)`` for a perplexity
    ratio, ``(≥4.1 pts)`` for accuracy points; empty when unknown."""
    if missing(value) or not math.isfinite(value):
        return ""
    if scale == paired.RATIO:
        return f"(≥{value:.2f}x)"
    return f"(≥{100 * value:.1f} pts)"


@dataclass
class Marks:
    """Bold, tied and the text beside tied cells, with the verdicts they came from.

    Attributes:
        best, tied: masks shaped like the table's values.
        suffix: text after a tied cell (the detectable difference), same shape.
        verdicts: every column-and-block verdict with two or more pruned methods.
        undecided: of those, how many had a pair of runs without shared units.
    """

    best: pd.DataFrame
    tied: pd.DataFrame
    suffix: pd.DataFrame
    verdicts: list[paired.Verdict] = field(default_factory=list)
    undecided: int = 0


def paired_marks(
    values: pd.DataFrame,
    cells: dict,
    units: Units,
    lower_is_better: bool,
    exclude: tuple[str, ...] = (DENSE,),
) -> Marks:
    """Marks for a table from paired tests (see the module docstring).

    Args:
        values: the table's values; the row index's last level is the method, the others
            form the blocks compared (model, protocol). Columns ending in ``"paper"`` are
            published numbers and never marked; a final ``"ours"`` level is dropped to
            look up ``cells``.
        cells: ``{(row, col): (Run, ...)}``: what each value was computed from.
        units: the per-unit outcomes.
        lower_is_better: perplexity (True) or accuracy (False).
        exclude: methods that never compete (the dense model).
    """
    best = pd.DataFrame(False, index=values.index, columns=values.columns)
    tied = best.copy()
    suffix = pd.DataFrame("", index=values.index, columns=values.columns, dtype=object)
    rows = list(values.index)
    blocks = list(dict.fromkeys(tuple(r[:-1]) for r in rows))
    marks = Marks(best, tied, suffix)
    for j, col in enumerate(values.columns):
        label = col if isinstance(col, tuple) else (col,)
        if label[-1] == PAPER:
            continue
        base = label[:-1] if label[-1] == OURS else label
        base = base if isinstance(col, tuple) else base[0]
        for block in blocks:
            where = {
                r[-1]: i
                for i, r in enumerate(rows)
                if tuple(r[:-1]) == block and r[-1] not in exclude and (r, base) in cells
            }
            scores = {m: float(values.iat[i, j]) for m, i in where.items()}
            scores = {m: v for m, v in scores.items() if not np.isnan(v)}
            if len(scores) < 2:
                continue

            def compare(x, y, block=block, base=base):
                return units.compare_cells(cells[((*block, x), base)], cells[((*block, y), base)])

            verdict = paired.best_of(scores, compare, lower_is_better)
            marks.verdicts.append(verdict)
            if not verdict.decided:
                marks.undecided += 1
            elif verdict.best is not None:
                best.iat[where[verdict.best], j] = True
            else:
                scale = next(iter(verdict.comparisons.values())).scale
                for m in verdict.tied:
                    tied.iat[where[m], j] = True
                    suffix.iat[where[m], j] = detectable_text(verdict.detectable.get(m), scale)
    return marks


def _span(ns: list[int]) -> str:
    low, high = min(ns), max(ns)
    return str(low) if low == high else f"{low}-{high}"


def counted_claims(verdicts: list[paired.Verdict], alpha: float = paired.ALPHA) -> str | None:
    """ "Best in k of n columns" per method that is bold somewhere, counted after Holm's
    adjustment over the decided columns (None when no method is bold)."""
    winners = list(dict.fromkeys(v.best for v in verdicts if v.decided and v.best))
    if not winners:
        return None
    counts = [(m, *paired.count_best(verdicts, m, alpha)) for m in winners]
    listed = ", ".join(f"{m} {k} of {n}" for m, k, n in counts)
    return (
        f"Best in k of n columns (a count over columns is a family of claims: Holm-adjusted "
        f"at {alpha:g} over the columns with a verdict): {listed}."
    )


def marks_notes(marks: Marks, unit: str, test: str, example: str) -> list[str]:
    """The caption's sentences on the marks.

    Args:
        marks: what :func:`paired_marks` returned.
        unit: what was paired, singular (``"window"``, ``"document"``).
        test: the paired test, in words.
        example: how a detectable difference reads, e.g. ``"(≥1.23x): a perplexity
            ratio"``.
    """
    decided = [v for v in marks.verdicts if v.decided]
    if not decided:
        why = (
            f"the runs kept no per-{unit} outcomes to pair"
            if marks.undecided
            else "no column holds two pruned methods"
        )
        return [f"No verdict, nothing bold: a verdict needs a paired test, and {why}."]
    ns = [c.n for v in decided for c in v.comparisons.values()]
    text = (
        "Bold: the best pruned method of its column (within each model and protocol) by the "
        f"paired intersection-union rule: it beats every other pruned method by {test} at "
        f"two-sided {paired.ALPHA:g}; dense never competes, and a column with one pruned "
        f"method gets no mark. {TIE_MARK}: the best value and the methods it could not be "
        f"told apart from, none bold, each with the smallest difference the design detects "
        f"at {paired.POWER:.0%} power against the best (the best's: against its closest "
        f"rival); {example}. Paired on {_span(ns)} {unit}s per comparison."
    )
    if marks.undecided:
        text += (
            f" No verdict in {marks.undecided} column(s) whose runs share no per-{unit} outcomes."
        )
    return [text] + [n for n in (counted_claims(marks.verdicts),) if n]
