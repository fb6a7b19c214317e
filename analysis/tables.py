"""Which tables an experiment gets, and the command that renders them (Markdown + LaTeX).

A table shows one experiment's rows, chosen by membership (the ``experiments`` column that
:mod:`analysis.collect` writes; ``experiment`` for rows without it), and every cell must come
from exactly one configuration (:mod:`analysis.cells`). :func:`experiment_tables` gives the
ablation views whose axis the experiment sweeps (:mod:`analysis.ablations`), then the paper's
tables (:mod:`analysis.builders`: ``table1_ppl``, ``achieved_sparsity``,
``table2_downstream``, ``pruning_time``) and the paired comparison of a reference method with
the others (:mod:`analysis.comparison`: ``paired_comparison``); a generic table that the
sweep makes ambiguous is left out with a note. Bold and tied marks and the comparison read
the per-unit outcomes merged beside the results file (:func:`analysis.collect.load_items`).
The command also writes the inference speed-up table when runs recorded inference rows
(:mod:`analysis.inference`).

    python -m analysis.tables [--results results/results.parquet] [--out results/tables]
                              [--experiment cpu_demo ...] [--only table1_ppl ...]
                              [--reference twossp]

The names other code imports from here (the builders, :class:`Table`, the orders) are
re-exported from the modules that define them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis import ablations, comparison, inference
from analysis.builders import (
    achieved_table,
    all_tables,
    downstream_table,
    perplexity_table,
    time_table,
)
from analysis.captions import SMOKE_TEST_MODELS
from analysis.cells import AmbiguousCellError, add_experiment_option, chosen, select
from analysis.collect import EXPERIMENTS, default_results_dir, load, load_items
from analysis.order import (
    METHOD_ORDER,
    MODEL_ORDER,
    PPL_DATASETS,
    PROTOCOL_ORDER,
    TASKS,
)
from analysis.published import PUBLISHED, PUBLISHED_COLUMNS, load_published
from analysis.render import Table, render
from analysis.verdicts import as_units

__all__ = [
    "METHOD_ORDER",
    "MODEL_ORDER",
    "PPL_DATASETS",
    "PROTOCOL_ORDER",
    "PUBLISHED",
    "PUBLISHED_COLUMNS",
    "SMOKE_TEST_MODELS",
    "TASKS",
    "AmbiguousCellError",
    "Table",
    "achieved_table",
    "all_tables",
    "downstream_table",
    "experiment_tables",
    "load_published",
    "main",
    "perplexity_table",
    "render",
    "time_table",
]


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

    When an ablation view applies, generic tables that its sweep makes ambiguous are left
    out (their reason appended to ``skipped``); otherwise ambiguity raises. ``items``: the
    per-unit outcomes (:func:`analysis.collect.load_items`) the verdicts are paired on.
    """
    views = ablations.views(frame, experiment)
    notes: list[str] = []
    units = as_units(items)
    generic = all_tables(frame, experiment, published, notes if views else None, units)
    if comparison.applies(frame, reference, experiment):
        try:
            table = comparison.comparison_table(frame, units, reference, experiment)
            if table.values.size:
                generic.append(table)
        except AmbiguousCellError as exc:
            if not views:
                raise
            notes.append(str(exc))
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
    add_experiment_option(parser)
    parser.add_argument("--published", type=Path, default=PUBLISHED)
    parser.add_argument("--only", nargs="+", default=None, help="print only these tables")
    parser.add_argument(
        "--reference",
        default=comparison.REFERENCE,
        help="the method paired_comparison compares with the others (default: %(default)s)",
    )
    args = parser.parse_args(argv)
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
    skipped: list[str] = []
    try:
        tables = experiment_tables(
            frame,
            args.experiment,
            load_published(args.published),
            skipped,
            load_items(args.results),
            args.reference,
        )
    except AmbiguousCellError as exc:
        print(f"[tables] error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.only:
        tables = [t for t in tables if t.name in args.only]
    paths = render(tables, out)
    for t in tables:
        print(t.to_markdown())
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
