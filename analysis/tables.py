"""The paper's tables from merged results, as Markdown and LaTeX.

- Table 1, perplexity: rows model x method, columns sparsity x dataset; the dense model is one
  row per model (its values repeated under each sparsity) and is not a candidate for "best".
- Table 2, downstream accuracy at one sparsity (37.5% as in the paper): one column per task
  plus their mean, in percent.
- Pruning time: seconds in ``method.prune`` per model x method x sparsity.

The best value of each column within each model is bold (lowest perplexity, highest
accuracy, lowest time). Every value column has a ``paper`` sibling filled from
``analysis/published.csv`` where that file has the same model, method, sparsity and dataset.

    python -m analysis.tables [--results results/results.parquet] [--out results/tables]
                              [--experiment cpu_demo]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import default_results_dir, load

log = logging.getLogger(__name__)

PUBLISHED = Path(__file__).with_name("published.csv")
PUBLISHED_COLUMNS = ["model", "method", "sparsity", "metric", "dataset", "value", "source_table"]
METHOD_ORDER = ("dense", "twossp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt")
MODEL_ORDER = ("llama2_7b", "mistral_7b", "qwen2_5_7b", "phi3_medium")
PPL_DATASETS = ("wikitext2", "c4", "ptb")
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu")
KEY = ["model", "method", "sparsity", "metric", "dataset"]
OURS, PAPER = "ours", "paper"


@dataclass
class Table:
    """A rendered-to-be table: numeric values, a bold mask and how to print them.

    ``values`` has a (model, method) row index and tuple column labels whose last level is
    ``"ours"`` or ``"paper"``; ``bold`` has the same shape.
    """

    name: str
    title: str
    values: pd.DataFrame
    bold: pd.DataFrame
    digits: int = 2
    notes: list[str] = field(default_factory=list)

    def cell(self, i: int, j: int, bold_fmt: str) -> str:
        v = self.values.iloc[i, j]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        text = f"{v:.{self.digits}f}"
        return bold_fmt.format(text) if bool(self.bold.iloc[i, j]) else text

    def _cells(self, i: int, bold_fmt: str) -> list[str]:
        return [self.cell(i, j, bold_fmt) for j in range(self.values.shape[1])]

    def to_markdown(self) -> str:
        heads = [
            " ".join(str(p) for p in col[:-1]) if col[-1] == OURS else "(paper)"
            for col in self.values.columns
        ]
        lines = [
            f"**{self.title}**",
            "",
            "| model | method | " + " | ".join(heads) + " |",
            "|" + "---|" * 2 + "---:|" * len(heads),
        ]
        for i, row in enumerate(self.values.index):
            cells = self._cells(i, "**{}**")
            lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(cells) + " |")
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_latex(self) -> str:
        cols = list(self.values.columns)
        depth = len(cols[0])
        out = [
            f"% {self.title}",
            *[f"% {n}" for n in self.notes],
            "\\begin{tabular}{ll" + "r" * len(cols) + "}",
            "\\toprule",
        ]
        for level in range(depth):
            cells, rules, i = ["", ""], [], 0
            while i < len(cols):
                j = i
                while j + 1 < len(cols) and cols[j + 1][: level + 1] == cols[i][: level + 1]:
                    j += 1
                label = _tex(cols[i][level])
                span = j - i + 1
                cells.append(f"\\multicolumn{{{span}}}{{c}}{{{label}}}" if span > 1 else label)
                if span > 1 and level < depth - 1:
                    rules.append(f"\\cmidrule(lr){{{i + 3}-{j + 3}}}")
                i = j + 1
            if level == depth - 1:
                cells[:2] = ["model", "method"]
            out.append(" & ".join(cells) + " \\\\")
            out.extend(rules)
        out.append("\\midrule")
        previous = None
        for i, row in enumerate(self.values.index):
            if previous is not None and row[0] != previous:
                out.append("\\midrule")
            previous = row[0]
            cells = self._cells(i, "\\textbf{{{}}}")
            out.append(" & ".join([_tex(row[0]), _tex(row[1]), *cells]) + " \\\\")
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
    ):
        text = text.replace(a, b)
    return text


def sparsity_label(s: float) -> str:
    return f"{100 * s:g}%"


def ordered(values, preferred) -> list:
    values = list(dict.fromkeys(values))
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


def tidy(frame: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """One value per (model, method, sparsity, metric, dataset): the newest run's."""
    if experiment is not None:
        frame = frame[frame["experiment"] == experiment]
    out = frame.assign(sparsity=frame["target_sparsity"].astype(float).round(4))
    out = out.sort_values(["created_at", "run_id"])
    dupes = out.duplicated(KEY, keep="last")
    if dupes.any():
        log.info("%d rows superseded by newer runs of the same model/method/sparsity", dupes.sum())
    return out[~dupes]


def _paper_value(pub: pd.DataFrame, model, method, sparsity, metric, dataset) -> float:
    hit = pub[
        (pub["model"] == model)
        & (pub["method"] == method)
        & (pub["metric"] == metric)
        & (pub["dataset"] == dataset)
    ]
    if method != "dense":
        hit = hit[np.isclose(hit["sparsity"], sparsity)]
    return float(hit["value"].iloc[-1]) if len(hit) else float("nan")


def best_mask(
    values: pd.DataFrame, lower_is_better: bool, exclude: tuple[str, ...] = ("dense",)
) -> pd.DataFrame:
    """True where a value is the best of its ``ours`` column within its model block."""
    mask = pd.DataFrame(False, index=values.index, columns=values.columns)
    models = values.index.get_level_values(0)
    candidate = ~values.index.get_level_values(1).isin(list(exclude))
    for j, col in enumerate(values.columns):
        if col[-1] != OURS:
            continue
        column = values.iloc[:, j].to_numpy(dtype=float)
        for model in models.unique():
            sel = (models == model) & candidate & ~np.isnan(column)
            if not sel.any():
                continue
            best = column[sel].min() if lower_is_better else column[sel].max()
            hits = sel & np.isclose(np.nan_to_num(column, nan=np.inf), best)
            mask.iloc[np.flatnonzero(hits), j] = True
    return mask


def _frame(cells: dict, rows: list, cols: list) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(rows, names=["model", "method"])
    data = [[cells.get((r, c), float("nan")) for c in cols] for r in rows]
    return pd.DataFrame(data, index=index, columns=pd.MultiIndex.from_tuples(cols), dtype=float)


def _rows(frame: pd.DataFrame) -> list[tuple[str, str]]:
    rows = []
    for model in ordered(frame["model"], MODEL_ORDER):
        methods = frame.loc[frame["model"] == model, "method"]
        rows += [(model, m) for m in ordered(methods, METHOD_ORDER)]
    return rows


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
    """Table 1: perplexity, model x method rows, sparsity x dataset columns."""
    rows_ = tidy(frame, experiment)
    rows_ = rows_[rows_["metric"] == "ppl"]
    pub = load_published() if published is None else published
    datasets = list(datasets or ordered(rows_["dataset"], PPL_DATASETS))
    pruned = rows_[rows_["method"] != "dense"]
    sparsities = list(sparsities or sorted(pruned["sparsity"].unique()))
    cols = [
        (sparsity_label(s), d, src) for s in sparsities for d in datasets for src in (OURS, PAPER)
    ]
    cells = {}
    for r in rows_.itertuples():
        targets = sparsities if r.method == "dense" else [r.sparsity]
        for s in targets:
            if s in sparsities and r.dataset in datasets:
                cells[((r.model, r.method), (sparsity_label(s), r.dataset, OURS))] = r.value
    rows = _rows(rows_)
    for row in rows:
        for s in sparsities:
            for d in datasets:
                v = _paper_value(pub, row[0], row[1], s, "ppl", d)
                cells[(row, (sparsity_label(s), d, PAPER))] = v
    values = _frame(cells, rows, cols)
    notes = [
        "Perplexity (lower is better); bold: best pruned method per column and model. "
        "Dense: the unpruned model, repeated under each sparsity."
    ]
    return Table("table1_ppl", "Table 1: perplexity", values, best_mask(values, True), 2, notes)


def downstream_table(
    frame: pd.DataFrame,
    sparsity: float = 0.375,
    tasks=None,
    metric: str = "acc",
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> Table:
    """Table 2: accuracy (percent) per task and their mean at one sparsity."""
    rows_ = tidy(frame, experiment)
    rows_ = rows_[
        (rows_["metric"] == metric)
        & (np.isclose(rows_["sparsity"], sparsity) | (rows_["method"] == "dense"))
    ]
    pub = load_published() if published is None else published
    tasks = list(tasks or ordered(rows_["dataset"], TASKS))
    cols = [(t, src) for t in [*tasks, "avg"] for src in (OURS, PAPER)]
    rows = _rows(rows_)
    cells = {
        ((r.model, r.method), (r.dataset, OURS)): 100 * r.value
        for r in rows_.itertuples()
        if r.dataset in tasks
    }
    for row in rows:
        for t in tasks:
            cells[(row, (t, PAPER))] = 100 * _paper_value(pub, *row, sparsity, metric, t)
        for src in (OURS, PAPER):
            got = [cells.get((row, (t, src)), float("nan")) for t in tasks]
            cells[(row, ("avg", src))] = (
                float(np.mean(got)) if not np.isnan(got).any() else float("nan")
            )
    values = _frame(cells, rows, cols)
    notes = [
        f"Accuracy ({metric}, %) at {sparsity_label(sparsity)} sparsity (higher is "
        "better); avg = mean over the tasks, shown when all are present."
    ]
    return Table(
        "table2_downstream",
        f"Table 2: downstream accuracy at {sparsity_label(sparsity)} sparsity",
        values,
        best_mask(values, False),
        2,
        notes + _limit_notes(rows_),
    )


def time_table(
    frame: pd.DataFrame,
    sparsities=None,
    published: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> Table:
    """Pruning time in seconds per model x method (rows) and sparsity (columns)."""
    runs = tidy(frame, experiment)
    runs = runs[runs["method"] != "dense"].drop_duplicates("run_id")
    runs = runs.sort_values("created_at").drop_duplicates(
        ["model", "method", "sparsity"], keep="last"
    )
    pub = load_published() if published is None else published
    sparsities = list(sparsities or sorted(runs["sparsity"].unique()))
    cols = [(sparsity_label(s), src) for s in sparsities for src in (OURS, PAPER)]
    rows = _rows(runs)
    cells = {
        ((r.model, r.method), (sparsity_label(r.sparsity), OURS)): r.prune_seconds
        for r in runs.itertuples()
    }
    for row in rows:
        for s in sparsities:
            cells[(row, (sparsity_label(s), PAPER))] = _paper_value(
                pub, *row, s, "prune_seconds", ""
            )
    values = _frame(cells, rows, cols)
    return Table(
        "pruning_time",
        "Pruning time (seconds)",
        values,
        best_mask(values, True),
        2,
        [
            "Wall-clock seconds in method.prune (lower is better), calibration "
            "loading and evaluation excluded."
        ],
    )


def all_tables(
    frame: pd.DataFrame, experiment: str | None = None, published: pd.DataFrame | None = None
) -> list[Table]:
    pub = load_published() if published is None else published
    tables = []
    has = set(frame["metric"])
    if "ppl" in has:
        tables.append(perplexity_table(frame, published=pub, experiment=experiment))
    if "acc" in has:
        tables.append(downstream_table(frame, published=pub, experiment=experiment))
    if len(frame):
        tables.append(time_table(frame, published=pub, experiment=experiment))
    return [t for t in tables if len(t.values)]


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


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Render the paper's tables (md + tex).")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="merged results file (default: $TWOSSP_RESULTS_FILE or results/results.parquet)",
    )
    parser.add_argument("--out", type=Path, default=default_results_dir() / "tables")
    parser.add_argument("--experiment", default=None, help="only rows of this experiment")
    parser.add_argument("--published", type=Path, default=PUBLISHED)
    args = parser.parse_args(argv)
    frame = load(args.results)
    tables = all_tables(frame, args.experiment, load_published(args.published))
    paths = render(tables, args.out)
    for t in tables:
        print(t.to_markdown())
    print(f"[tables] wrote {len(paths)} files to {args.out}")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
