"""Plots from merged results, as PNG (matplotlib Agg); the same rows as the tables.

- ``ppl_vs_sparsity_<model>_<protocol>.png``: one panel per perplexity dataset, log scale, a
  line per method; the dense model is a dashed horizontal line. Methods that coincide
  (ShortGPT and window often remove the same blocks) stay visible: each method has its own
  marker and is drawn a little to the side of the true sparsity (the axis label says by how
  much).
- ``acc_vs_sparsity_<model>_<protocol>.png``: one panel per task plus the mean over tasks.
- ``ablation_alpha_<model>_<protocol>.png``: 2SSP perplexity against alpha, a line per
  sparsity, one panel per dataset.
- ``ablation_calib_<model>_<protocol>.png``: 2SSP perplexity against calibration windows
  (log scale), mean over calibration seeds with sample-std error bars, a line per sparsity.

Like the tables, the plots refuse a point fed by several configurations, except that the
generic plots are left out when an ablation view covers the experiment's sweep.

    python -m analysis.plots [--results results/results.parquet] [--out results/plots]
                             [--experiment cpu_demo]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402  (a matplotlib dependency)

from analysis import ablations  # noqa: E402
from analysis.collect import default_results_dir, load  # noqa: E402
from analysis.tables import (  # noqa: E402
    DENSE,
    METHOD_ORDER,
    MODEL_ORDER,
    PPL_DATASETS,
    PROTOCOL_ORDER,
    ROW_KEY,
    TASKS,
    AmbiguousCellError,
    ordered,
    select,
    unique_cells,
    with_sparsity,
)

log = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
OFFSET_PT = 0.6  # horizontal spacing between methods, in sparsity percentage points
DPI = 100


def _panels(n: int):
    cols = min(n, 4)
    rows = -(-n // cols)
    size = (max(4.0 * cols, 5.5), 3.4 * rows + 0.6)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def method_style(methods: list[str]) -> dict[str, tuple[str, float, str]]:
    """Per pruned method: its marker, horizontal offset (percentage points) and line style."""
    pruned = [m for m in methods if m != DENSE]
    mid = (len(pruned) - 1) / 2
    return {
        m: (MARKERS[i % len(MARKERS)], (i - mid) * OFFSET_PT, LINESTYLES[i % len(LINESTYLES)])
        for i, m in enumerate(pruned)
    }


def _offset_label(style: dict) -> str:
    if len(style) < 2:
        return "target sparsity (%)"
    return f"target sparsity (%); methods drawn {OFFSET_PT:g} pt apart"


def _draw(ax, rows: pd.DataFrame, style: dict, scale: float = 1.0) -> None:
    for method in ordered(rows["method"], METHOD_ORDER):
        sub = rows[rows["method"] == method].sort_values("sparsity")
        if method == DENSE:
            for v in sub["value"]:
                ax.axhline(scale * v, color="black", linestyle="--", linewidth=1, label="dense")
            continue
        marker, shift, linestyle = style[method]
        ax.plot(
            100 * sub["sparsity"] + shift,
            scale * sub["value"],
            marker=marker,
            linestyle=linestyle,
            markersize=5,
            linewidth=1.2,
            alpha=0.85,
            label=method,
        )
    ax.set_xlabel(_offset_label(style))
    ax.grid(alpha=0.3)


def _finish(fig, axes, title: str, path: Path) -> Path:
    handles = {}
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
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, path)
    plt.close(fig)
    return path


def save_png(fig, path: Path) -> None:
    """Save ``fig`` as a palette PNG (128 colours): a third of the size of matplotlib's RGBA
    output at no visible cost for line plots, which keeps the executed notebook small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=128).save(path, optimize=True)


def _point_rows(frame: pd.DataFrame, metric: str, plot: str) -> pd.DataFrame:
    rows = with_sparsity(frame[frame["metric"] == metric])
    return unique_cells(rows, [*ROW_KEY, "sparsity", "metric", "dataset"], plot)


def ppl_vs_sparsity(
    frame: pd.DataFrame, model: str, protocol: str, path: str | Path, datasets=None
) -> Path | None:
    """One panel per dataset: perplexity (log scale) against sparsity, a line per method."""
    rows = frame[(frame["model"] == model) & (frame["protocol"] == protocol)]
    rows = _point_rows(rows, "ppl", "ppl_vs_sparsity")
    if rows.empty:
        return None
    datasets = list(datasets or ordered(rows["dataset"], PPL_DATASETS))
    style = method_style(ordered(rows["method"], METHOD_ORDER))
    fig, axes = _panels(len(datasets))
    for ax, name in zip(axes, datasets, strict=True):
        _draw(ax, rows[rows["dataset"] == name], style)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_ylabel("perplexity")
    return _finish(fig, axes, f"{model} ({protocol}): perplexity vs sparsity", Path(path))


def acc_vs_sparsity(
    frame: pd.DataFrame,
    model: str,
    protocol: str,
    path: str | Path,
    tasks=None,
    metric: str = "acc",
) -> Path | None:
    """One panel per task plus their mean: accuracy (%) against sparsity, a line per method."""
    rows = frame[(frame["model"] == model) & (frame["protocol"] == protocol)]
    rows = _point_rows(rows, metric, "acc_vs_sparsity")
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
    style = method_style(ordered(rows["method"], METHOD_ORDER))
    fig, axes = _panels(len(tasks) + 1)
    for ax, name in zip(axes, [*tasks, "mean"], strict=True):
        _draw(ax, mean if name == "mean" else rows[rows["dataset"] == name], style, scale=100)
        ax.set_title(name)
        ax.set_ylabel(f"{metric} (%)")
    return _finish(fig, axes, f"{model} ({protocol}): accuracy vs sparsity", Path(path))


def _by_model_protocol(rows: pd.DataFrame):
    for model in ordered(rows["model"], MODEL_ORDER):
        protocols = rows.loc[rows["model"] == model, "protocol"]
        for protocol in ordered(protocols, PROTOCOL_ORDER):
            yield model, protocol, rows[(rows["model"] == model) & (rows["protocol"] == protocol)]


def alpha_curve(rows: pd.DataFrame, model: str, protocol: str, path: str | Path) -> Path:
    """Perplexity against alpha, a line per sparsity, one panel per dataset."""
    datasets = ordered(rows["dataset"], PPL_DATASETS)
    fig, axes = _panels(len(datasets))
    for ax, name in zip(axes, datasets, strict=True):
        sub = rows[rows["dataset"] == name]
        for i, s in enumerate(sorted(sub["sparsity"].unique())):
            line = sub[sub["sparsity"] == s].sort_values("alpha")
            ax.plot(
                line["alpha"],
                line["value"],
                marker=MARKERS[i % len(MARKERS)],
                label=f"{100 * s:g}% sparsity",
            )
        ax.axvline(ablations.PAPER_ALPHA, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"alpha (dotted: paper default {ablations.PAPER_ALPHA:g})")
        ax.set_ylabel("perplexity")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, f"{model} ({protocol}): 2SSP alpha ablation", Path(path))


def calibration_curve(stats: pd.DataFrame, model: str, protocol: str, path: str | Path) -> Path:
    """Mean perplexity over seeds (error bars: sample std) against calibration windows."""
    datasets = ordered(stats["dataset"], PPL_DATASETS)
    fig, axes = _panels(len(datasets))
    for ax, name in zip(axes, datasets, strict=True):
        sub = stats[stats["dataset"] == name]
        for i, s in enumerate(sorted(sub["sparsity"].unique())):
            line = sub[sub["sparsity"] == s].sort_values("windows")
            seeds = f"n={_span(line['n'])}"
            ax.errorbar(
                line["windows"],
                line["mean"],
                yerr=line["std"].fillna(0.0),
                marker=MARKERS[i % len(MARKERS)],
                capsize=3,
                label=f"{100 * s:g}% sparsity ({seeds} seeds)",
            )
        ax.set_xscale("log", base=2)
        ticks = sorted(int(w) for w in sub["windows"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("calibration windows read by stage 1")
        ax.set_ylabel("perplexity (mean ± std over seeds)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, f"{model} ({protocol}): 2SSP calibration size", Path(path))


def _span(values) -> str:
    values = sorted({int(v) for v in values})
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def ablation_plots(frame: pd.DataFrame, out_dir: Path, experiment: str | None) -> list[Path]:
    paths = []
    if ablations.alpha_applies(frame, experiment):
        rows = ablations.alpha_rows(frame, experiment)
        for model, protocol, sub in _by_model_protocol(rows):
            path = out_dir / f"ablation_alpha_{model}_{protocol}.png"
            paths.append(alpha_curve(sub, model, protocol, path))
    if ablations.calibration_applies(frame, experiment):
        stats = ablations.calibration_stats(frame, experiment)
        for model, protocol, sub in _by_model_protocol(stats):
            path = out_dir / f"ablation_calib_{model}_{protocol}.png"
            paths.append(calibration_curve(sub, model, protocol, path))
    return paths


def generic_plots(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    paths = []
    for model, protocol, _ in _by_model_protocol(rows):
        tag = f"{model}_{protocol}"
        paths.append(ppl_vs_sparsity(rows, model, protocol, out_dir / f"ppl_vs_sparsity_{tag}.png"))
        paths.append(acc_vs_sparsity(rows, model, protocol, out_dir / f"acc_vs_sparsity_{tag}.png"))
    return [p for p in paths if p is not None]


def all_plots(
    frame: pd.DataFrame, out_dir: str | Path, experiment: str | None = None
) -> list[Path]:
    """Every plot that applies to ``experiment``'s rows; returns the files written.

    Raises:
        AmbiguousCellError: a point of a generic plot is fed by several configurations and
            no ablation view covers the sweep.
    """
    out_dir = Path(out_dir)
    rows = select(frame, experiment)
    paths = ablation_plots(frame, out_dir, experiment)
    try:
        paths += generic_plots(rows, out_dir)
    except AmbiguousCellError as exc:
        if not paths:
            raise
        log.info("generic plots left out (the ablation plots show the sweep): %s", exc)
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Plot perplexity / accuracy vs sparsity.")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="merged results file (default: $TWOSSP_RESULTS_FILE or results/results.parquet)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: <results dir>/plots")
    parser.add_argument("--experiment", default=None, help="only rows of this experiment")
    args = parser.parse_args(argv)
    out = args.out or default_results_dir() / "plots"
    try:
        paths = all_plots(load(args.results), out, args.experiment)
    except AmbiguousCellError as exc:
        print(f"[plots] error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"[plots] wrote {len(paths)} files to {out}")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
