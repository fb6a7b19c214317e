"""Perplexity and accuracy against sparsity, one line per method, as PNG (matplotlib Agg).

- ``ppl_vs_sparsity_<model>.png``: one panel per perplexity dataset, log scale; the dense
  model is a dashed horizontal line.
- ``acc_vs_sparsity_<model>.png``: one panel per task plus the mean over tasks.

    python -m analysis.plots [--results results/results.parquet] [--out results/plots]
                             [--experiment cpu_demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.collect import default_results_dir, load  # noqa: E402
from analysis.tables import (  # noqa: E402
    METHOD_ORDER,
    MODEL_ORDER,
    PPL_DATASETS,
    TASKS,
    ordered,
    tidy,
)


def _panels(n: int):
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _draw(ax, rows: pd.DataFrame, scale: float = 1.0) -> None:
    for method in ordered(rows["method"], METHOD_ORDER):
        sub = rows[rows["method"] == method].sort_values("sparsity")
        if method == "dense":
            for v in sub["value"]:
                ax.axhline(scale * v, color="black", linestyle="--", linewidth=1, label="dense")
        else:
            ax.plot(100 * sub["sparsity"], scale * sub["value"], marker="o", label=method)
    ax.set_xlabel("sparsity (%)")
    ax.grid(alpha=0.3)


def _finish(fig, axes, title: str, path: Path) -> Path:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = list(handles)
    fig.legend(
        [handles[k] for k in labels],
        labels,
        loc="lower center",
        ncol=min(len(labels), 7),
        frameon=False,
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ppl_vs_sparsity(
    frame: pd.DataFrame, model: str, path: str | Path, datasets=None
) -> Path | None:
    """One panel per dataset: perplexity (log scale) against sparsity, a line per method."""
    rows = frame[(frame["metric"] == "ppl") & (frame["model"] == model)]
    if rows.empty:
        return None
    datasets = list(datasets or ordered(rows["dataset"], PPL_DATASETS))
    fig, axes = _panels(len(datasets))
    for ax, name in zip(axes, datasets, strict=True):
        _draw(ax, rows[rows["dataset"] == name])
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_ylabel("perplexity")
    return _finish(fig, axes, f"{model}: perplexity vs sparsity", Path(path))


def acc_vs_sparsity(
    frame: pd.DataFrame, model: str, path: str | Path, tasks=None, metric: str = "acc"
) -> Path | None:
    """One panel per task plus their mean: accuracy (%) against sparsity, a line per method."""
    rows = frame[(frame["metric"] == metric) & (frame["model"] == model)]
    if rows.empty:
        return None
    tasks = list(tasks or ordered(rows["dataset"], TASKS))
    rows = rows[rows["dataset"].isin(tasks)]
    mean = (
        rows.groupby(["method", "sparsity"])["value"]
        .agg(lambda v: v.mean() if len(v) == len(tasks) else np.nan)
        .dropna()
        .reset_index()
        .assign(dataset="mean")
    )
    fig, axes = _panels(len(tasks) + 1)
    for ax, name in zip(axes, [*tasks, "mean"], strict=True):
        _draw(ax, mean if name == "mean" else rows[rows["dataset"] == name], scale=100)
        ax.set_title(name)
        ax.set_ylabel(f"{metric} (%)")
    return _finish(fig, axes, f"{model}: accuracy vs sparsity", Path(path))


def all_plots(
    frame: pd.DataFrame, out_dir: str | Path, experiment: str | None = None
) -> list[Path]:
    """Both plots for every model in ``frame``; returns the files written."""
    rows = tidy(frame, experiment)
    out_dir = Path(out_dir)
    paths = []
    for model in ordered(rows["model"], MODEL_ORDER):
        paths.append(ppl_vs_sparsity(rows, model, out_dir / f"ppl_vs_sparsity_{model}.png"))
        paths.append(acc_vs_sparsity(rows, model, out_dir / f"acc_vs_sparsity_{model}.png"))
    return [p for p in paths if p is not None]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Plot perplexity / accuracy vs sparsity.")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="merged results file (default: $TWOSSP_RESULTS_FILE or results/results.parquet)",
    )
    parser.add_argument("--out", type=Path, default=default_results_dir() / "plots")
    parser.add_argument("--experiment", default=None, help="only rows of this experiment")
    args = parser.parse_args(argv)
    paths = all_plots(load(args.results), args.out, args.experiment)
    print(f"[plots] wrote {len(paths)} files to {args.out}")
    return paths


if __name__ == "__main__":
    main()
