"""The order of the pruned methods by perplexity, told apart by paired tests, and whether two
experiments (e.g. the cut budgets and the authors' budgets) order them differently.

In each column (model, protocol, sparsity, perplexity dataset) of one experiment every pair
of pruned methods is compared on the windows both scored (:class:`analysis.verdicts.Units`:
the paired perplexity ratio, sign-flip p), and the pairs' p values are Holm-adjusted within
the column. The column's order lists the methods from lowest perplexity up, joined by ``<``
where the adjacent pair is told apart at two-sided 0.05 after adjustment and by ``≈`` where
it is not. Two experiments order a pair differently only when each tells it apart and they
disagree on its direction (a *reversal*); a pair told apart in one experiment and not in the
other is listed apart, with the smaller design's detectable ratio, never called a change.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from analysis import paired
from analysis.cells import DENSE, select, unique_cells, with_sparsity
from analysis.comparison import DATASET_NAMES, method_name
from analysis.order import METHOD_ORDER
from analysis.verdicts import Run, as_units

ALPHA = paired.ALPHA
COLUMN = ["model", "protocol", "sparsity", "dataset"]


def _rank(value, order) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


def pair_tests(frame: pd.DataFrame, items, experiment: str) -> pd.DataFrame:
    """Every pair of pruned methods in every perplexity column of ``experiment``.

    Returns:
        One row per column and pair: the ``COLUMN`` fields, ``a`` and ``b`` (``a`` the lower
        perplexity), ``ppl_a``, ``ppl_b``, ``ratio`` (a / b), ``p``, ``p_holm`` (within the
        column), ``detectable`` (ratio at 80% power) and ``n`` (windows paired).

    Raises:
        AmbiguousCellError: a column fed by several configurations of one method.
    """
    units = as_units(items)
    rows = with_sparsity(select(frame, experiment))
    rows = rows[(rows["metric"] == "ppl") & (rows["method"] != DENSE)]
    rows = unique_cells(rows, [*COLUMN, "method"], f"ranking of {experiment}")
    out = []
    for column, group in rows.groupby(COLUMN, sort=False):
        group = group.sort_values("value")
        found = []
        for (_, a), (_, b) in combinations(group.iterrows(), 2):
            result = units.compare(Run.of(a), Run.of(b))
            found.append(
                {
                    **dict(zip(COLUMN, column, strict=True)),
                    "a": a["method"],
                    "b": b["method"],
                    "ppl_a": a["value"],
                    "ppl_b": b["value"],
                    "ratio": np.nan if result is None else result.estimate,
                    "p": np.nan if result is None else result.p,
                    "detectable": np.nan if result is None else result.detectable,
                    "n": 0 if result is None else result.n,
                }  # fmt: skip
            )
        adjusted = paired.holm([f["p"] for f in found])
        out += [{**f, "p_holm": q} for f, q in zip(found, adjusted, strict=True)]
    return pd.DataFrame(out)


def _row(pairs: pd.DataFrame, x: str, y: str) -> pd.Series | None:
    """The test of methods ``x`` and ``y`` in one column's pairs (either order), or None."""
    hit = pairs[((pairs["a"] == x) & (pairs["b"] == y)) | ((pairs["a"] == y) & (pairs["b"] == x))]
    return hit.iloc[0] if len(hit) else None


def _apart(pairs: pd.DataFrame, x: str, y: str) -> bool:
    row = _row(pairs, x, y)
    return row is not None and bool(row["p_holm"] < ALPHA)


def order_text(pairs: pd.DataFrame) -> str:
    """One column's methods from lowest perplexity up, ``<`` where the adjacent pair is told
    apart (Holm-adjusted 0.05), ``≈`` where it is not."""
    methods = list(dict.fromkeys([*pairs["a"], *pairs["b"]]))
    value = dict(zip(pairs["a"], pairs["ppl_a"], strict=True))
    value.update(zip(pairs["b"], pairs["ppl_b"], strict=True))
    methods.sort(key=lambda m: value[m])
    text = method_name(methods[0])
    for left, right in zip(methods, methods[1:], strict=False):
        text += (" < " if _apart(pairs, left, right) else " ≈ ") + method_name(right)
    return text


def _direction(pairs: pd.DataFrame, x: str, y: str) -> int:
    """+1: ``x`` lower than ``y`` and told apart; -1: ``y`` lower, told apart; 0: not."""
    if not _apart(pairs, x, y):
        return 0
    return 1 if _row(pairs, x, y)["a"] == x else -1


def _detectable(pairs: pd.DataFrame, x: str, y: str) -> float:
    row = _row(pairs, x, y)
    return np.nan if row is None else float(row["detectable"])


def compare_orders(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The columns both experiments scored, each with its two orders and the pairs whose
    verdicts differ: ``reversed`` (told apart in both, opposite directions) and ``one_only``
    (told apart in one experiment only)."""
    out = []
    keys = first[COLUMN].drop_duplicates().merge(second[COLUMN].drop_duplicates())
    for _, key in keys.iterrows():
        mine = first[(first[COLUMN] == key[COLUMN]).all(axis=1)]
        theirs = second[(second[COLUMN] == key[COLUMN]).all(axis=1)]
        shared = sorted(
            (set(mine["a"]) | set(mine["b"])) & (set(theirs["a"]) | set(theirs["b"])),
            key=lambda m: _rank(m, METHOD_ORDER),
        )
        reversed_, one_only = [], []
        for x, y in combinations(shared, 2):
            d1, d2 = _direction(mine, x, y), _direction(theirs, x, y)
            if d1 and d2 and d1 != d2:
                reversed_.append((x, y))
            elif bool(d1) != bool(d2):
                blind = theirs if d1 else mine  # the design that did not tell them apart
                one_only.append((x, y, "first" if d1 else "second", _detectable(blind, x, y)))
        out.append(
            {
                **key.to_dict(),
                "first": order_text(mine),
                "second": order_text(theirs),
                "reversed": reversed_,
                "one_only": one_only,
                "pairs": len(list(combinations(shared, 2))),
            }
        )
    return pd.DataFrame(out)


def _pair(x: str, y: str) -> str:
    return f"{method_name(x)} / {method_name(y)}"


def ranking_lines(frame: pd.DataFrame, items, first: str, second: str) -> list[str]:
    """The page's ranking section: both experiments' orders per column, then one sentence on
    whether they differ (from the tests, see the module docstring)."""
    units = as_units(items)
    found = compare_orders(pair_tests(frame, units, first), pair_tests(frame, units, second))
    if found.empty:
        return [f"No column of `{first}` and `{second}` holds perplexities of both."]
    lines = [
        f"| model | protocol | sparsity | dataset | order in `{first}` | order in `{second}` |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in found.iterrows():
        lines.append(
            f"| {r['model']} | {r['protocol']} | {100 * r['sparsity']:g}% | "
            f"{DATASET_NAMES.get(r['dataset'], r['dataset'])} | {r['first']} | {r['second']} |"
        )
    pairs = int(found["pairs"].sum())
    flipped = [(r["dataset"], x, y) for _, r in found.iterrows() for x, y in r["reversed"]]
    single = [(r["dataset"], *p) for _, r in found.iterrows() for p in r["one_only"]]
    lines += [
        "",
        f"_Methods from lowest perplexity up; `<`: the adjacent pair told apart by a paired "
        f"sign-flip test on the per-window log perplexities, Holm-adjusted over the column's "
        f"pairs, at two-sided {ALPHA:g}; `≈`: not told apart._",
        "",
    ]
    if flipped:
        text = "; ".join(f"{_pair(x, y)} on {DATASET_NAMES.get(d, d)}" for d, x, y in flipped)
        verdict = (
            f"**The ranking differs**: {len(flipped)} of {pairs} method pairs (pair x column) "
            f"are told apart in both experiments in opposite directions ({text})."
        )
    else:
        verdict = (
            f"**The ranking does not differ**: none of {pairs} method pairs (pair x column) is "
            "told apart in both experiments in opposite directions."
        )
    if single:
        parts = [
            f"{_pair(x, y)} on {DATASET_NAMES.get(d, d)} (only in "
            f"`{first if which == 'first' else second}`; the other could detect "
            f"{small:.2f}x)"
            for d, x, y, which, small in single
        ]
        verdict += (
            f" {len(single)} pairs are told apart in one experiment only, which is no reversal: "
            + "; ".join(parts)
            + "."
        )
    return [*lines, verdict]
