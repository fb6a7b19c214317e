"""Which tables an experiment gets, and the command that renders them (Markdown + LaTeX).

A table shows one experiment's rows, chosen by membership (the ``experiments`` column that
:mod:`analysis.collect` writes; ``experiment`` for rows without it). In a published
experiment's tables (``conf/experiment/<name>.yaml``) every cell must come from exactly one
configuration; a user's own runs (experiment ``default``, any other name, or every row) that
differ in a setting are split into setting groups instead, a ``setting`` row level such as
``eval.max_windows=8`` (:mod:`analysis.cells`). :func:`experiment_tables` gives the
ablation views whose axis the experiment sweeps (:mod:`analysis.ablations`), then the paper's
tables (:mod:`analysis.builders`: ``table1_ppl``, ``achieved_sparsity``,
``table2_downstream``, ``pruning_time``) and the paired comparison of a reference method with
the others (:mod:`analysis.comparison`: ``paired_comparison``); a generic table that the
sweep makes ambiguous is left out with a note. Bold and tied marks and the comparison read
the per-unit outcomes merged beside the results file (:func:`analysis.collect.load_items`).
The command also writes the inference speed-up table when runs recorded inference rows
(:func:`speedup`, :mod:`analysis.inference`). A table that refuses its cells is named in one
line with the reason and the others are rendered; the command exits 2 only when every table
was refused, or when ``--only`` names a table that does not exist (:data:`TABLE_NAMES`).

    python -m analysis.tables [--results results/results.parquet] [--out results/tables]
                              [--experiment cpu_demo ...] [--only table1_ppl ...]
                              [--reference twossp]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis import ablations, comparison, draws, inference
from analysis.builders import (
    all_tables,
)
from analysis.cells import AmbiguousCellError, add_experiment_option, chosen, select, strict
from analysis.collect import EXPERIMENTS, default_results_dir, load, load_items
from analysis.published import PUBLISHED, load_published
from analysis.render import Table, render
from analysis.verdicts import as_units

# Every table the command can write (``ablation_alpha_<dataset>``: one per perplexity dataset).
TABLE_NAMES = (
    "table1_ppl",
    "achieved_sparsity",
    "table2_downstream",
    "table2_downstream_acc_norm",
    "pruning_time",
    comparison.NAME,
    inference.NAME,
    draws.NAME,
    ablations.CALIB_NAME,
    f"{ablations.ALPHA_PREFIX}<dataset>",
)


def known_table(name: str) -> bool:
    """Whether ``name`` is a table the command can write (:data:`TABLE_NAMES`)."""
    alpha = ablations.ALPHA_PREFIX
    return name in TABLE_NAMES or (name.startswith(alpha) and len(name) > len(alpha))


def experiment_tables(
    frame: pd.DataFrame,
    experiment: str | None,
    published: pd.DataFrame | None = None,
    skipped: list[str] | None = None,
    items: pd.DataFrame | None = None,
    reference: str = comparison.REFERENCE,
) -> list[Table]:
    """The ablation views that apply to ``experiment``'s rows, then the generic tables, then
    the paired comparison of ``reference`` with the other methods (when it has rows).

    A published experiment's tables refuse a cell fed by several configurations; a user's
    own runs are split into setting groups (:func:`analysis.cells.strict`). A table that
    refuses is left out and its reason (``"<table>: ..."``) appended to ``skipped``; without
    ``skipped`` the first refusal raises, unless an ablation view applies (then generic
    tables that its sweep makes ambiguous are left out silently). Calibration draws are
    compared within each draw (:func:`analysis.comparison.by_draw`). ``items``: the per-unit
    outcomes (:func:`analysis.collect.load_items`) the verdicts are paired on.
    """
    notes: list[str] = []
    views = ablations.views(frame, experiment, None if skipped is None else notes)
    units = as_units(items)
    keep = notes if views or skipped is not None else None
    generic = all_tables(frame, experiment, published, keep, units)
    if comparison.applies(frame, reference, experiment):
        split = comparison.by_draw(frame, experiment)
        try:
            table = comparison.comparison_table(frame, units, reference, experiment, split)
            if table.values.size:
                generic.append(table)
        except AmbiguousCellError as exc:
            if keep is None:
                raise
            notes.append(str(exc))
    if skipped is not None:
        skipped.extend(notes)
    return views + generic


def speedup(frame: pd.DataFrame, experiment: str | list[str] | None) -> Table | None:
    """The inference speed-up table of ``experiment``'s rows (None without inference rows);
    a user's own runs are split into setting groups, a published experiment's refused
    (:class:`AmbiguousCellError`)."""
    return inference.speedup_table(select(frame, experiment), split=not strict(experiment))


def refusal_lines(refused: list[str], views: bool) -> list[str]:
    """What was not rendered: one line per refused table (``"<table> not rendered: <why>"``,
    from the ``"<table>: <why>"`` reasons :func:`experiment_tables` collects), or, when an
    ablation view was rendered (``views``), one line naming the generic tables its sweep
    makes ambiguous (the views show every point)."""
    if views and refused:
        names = ", ".join(reason.split(":", 1)[0] for reason in refused)
        return [
            f"not rendered: {names}; their cells would hold several points of the sweep, "
            f"which the ablation views show (first: {refused[0].split('; render')[0]})"
        ]
    lines = []
    for reason in refused:
        name, _, why = reason.partition(": ")
        lines.append(f"{name} not rendered: {why}")
    return lines


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Render the paper's tables (md + tex).")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="merged results file (default: $TWOSSP_RESULTS_FILE or results/results.parquet)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: <results dir>/tables")
    add_experiment_option(parser)
    parser.add_argument("--published", type=Path, default=PUBLISHED)
    parser.add_argument(
        "--only", nargs="+", default=None, help=f"print only these tables: {', '.join(TABLE_NAMES)}"
    )
    parser.add_argument(
        "--reference",
        default=comparison.REFERENCE,
        help="the method paired_comparison compares with the others (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.only or [] if not known_table(n)]
    if unknown:
        print(
            f"[tables] error: unknown table {', '.join(map(repr, unknown))} in --only; "
            f"known: {', '.join(TABLE_NAMES)}",
            file=sys.stderr,
        )
        sys.exit(2)
    out = args.out or default_results_dir() / "tables"
    frame = load(args.results)
    args.experiment = chosen(args.experiment)
    if args.experiment is not None and select(frame, args.experiment).empty:
        known = sorted({e for es in frame.get(EXPERIMENTS, []) for e in es} or [])
        print(
            f"[tables] error: no rows of experiment {args.experiment!r}; present: {known}",
            file=sys.stderr,
        )
        sys.exit(2)

    def wanted(name: str) -> bool:
        return args.only is None or name in args.only

    refused: list[str] = []
    tables = experiment_tables(
        frame,
        args.experiment,
        load_published(args.published),
        refused,
        load_items(args.results),
        args.reference,
    )
    try:
        speed = speedup(frame, args.experiment)
    except AmbiguousCellError as exc:
        speed = None
        refused.append(str(exc))
    tables += [speed] if speed is not None else []
    tables = [t for t in tables if wanted(t.name)]
    refused = [r for r in refused if wanted(r.split(":", 1)[0])]
    paths = render(tables, out)
    for t in tables:
        print(t.to_markdown())
    views = any(ablations.is_view(t.name) for t in tables)
    for line in refusal_lines(refused, views):
        print(f"[tables] {line}")
    shown = {t.name for t in tables} | {r.split(":", 1)[0] for r in refused}
    for name in [n for n in args.only or [] if n not in shown]:
        print(f"[tables] {name}: nothing to show (no rows of it in this selection)")
    print(f"[tables] wrote {len(paths)} files to {out}")
    if refused and not tables:
        print("[tables] error: every table was refused", file=sys.stderr)
        sys.exit(2)
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
