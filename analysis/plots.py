"""Plots from merged results, as PNG (matplotlib Agg); the same rows as the tables.

- ``ppl_vs_sparsity_<model>_<protocol>.png``: one panel per perplexity dataset, log scale, a
  line per method; the dense model is a dashed horizontal line. Methods that coincide
  (ShortGPT and window often remove the same blocks) stay visible: each method has its own
  marker and is drawn a little to the side of the true sparsity (the axis label says by how
  much). Error bars: each value's 95% interval (dense: a grey band), where the rows have one.
- ``acc_vs_sparsity_<model>_<protocol>.png``: one panel per task plus the mean over tasks,
  error bars ±1.96 standard errors (lm-eval's); a smoke-test model's figure says so in its
  title (:data:`analysis.captions.SMOKE_TEST_MODELS`).
- ``ablation_alpha_<model>_<protocol>.png``: 2SSP perplexity against alpha, a line per
  sparsity, one panel per dataset.
- ``ablation_calib_<model>_<protocol>.png``: 2SSP perplexity against calibration windows
  (log scale), mean over calibration seeds with sample-std error bars, a line per sparsity.

Like the tables, a published experiment's plots refuse a point fed by several configurations,
except that the generic plots are left out when an ablation view covers the experiment's
sweep; a user's own runs that differ in a setting get one figure per setting group (file
names end with the group, e.g. ``ppl_vs_sparsity_m_paper_eval.max_windows-8.png``).

    python -m analysis.plots [--results results/results.parquet] [--out results/plots]
                             [--experiment cpu_demo]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import ablations, draws, inference, intervals  # noqa: E402
from analysis.captions import SMOKE_TEST_MODELS  # noqa: E402
from analysis.cells import (  # noqa: E402
    DENSE,
    SETTING,
    AmbiguousCellError,
    add_experiment_option,
    chosen,
    select,
    split_labels,
    strict,
    unique_cells,
    with_sparsity,
)
from analysis.collect import default_results_dir, load  # noqa: E402
from analysis.figures import LINESTYLES, MARKERS, save_png  # noqa: E402
from analysis.order import (  # noqa: E402
    METHOD_ORDER,
    MODEL_ORDER,
    PPL_DATASETS,
    PROTOCOL_ORDER,
    ROW_KEY,
    TASKS,
    ordered,
)

log = logging.getLogger(__name__)

OFFSET_PT = 0.6  # horizontal spacing between methods, in sparsity percentage points


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


def _yerr(sub: pd.DataFrame, scale: float) -> np.ndarray | None:
    """Asymmetric error bars (2 x n) from the rows' 95% interval; None when none has one."""
    if "lo" not in sub.columns or sub["lo"].isna().all():
        return None
    value = scale * sub["value"].to_numpy(dtype=float)
    low = np.nan_to_num(value - scale * sub["lo"].to_numpy(dtype=float), nan=0.0)
    high = np.nan_to_num(scale * sub["hi"].to_numpy(dtype=float) - value, nan=0.0)
    return np.vstack([low, high])


def _draw(ax, rows: pd.DataFrame, style: dict, scale: float = 1.0) -> None:
    """A line per pruned method with 95% error bars where the rows have an interval (``lo``,
    ``hi`` from :func:`analysis.intervals.with_bounds`); dense as a dashed line with its
    interval as a grey band."""
    for method in ordered(rows["method"], METHOD_ORDER):
        sub = rows[rows["method"] == method].sort_values("sparsity")
        if method == DENSE:
            for r in sub.itertuples(index=False):
                ax.axhline(
                    scale * r.value, color="black", linestyle="--", linewidth=1, label="dense"
                )
                if not (np.isnan(getattr(r, "lo", np.nan)) or np.isnan(getattr(r, "hi", np.nan))):
                    ax.axhspan(scale * r.lo, scale * r.hi, color="black", alpha=0.08, linewidth=0)
            continue
        marker, shift, linestyle = style[method]
        ax.errorbar(
            100 * sub["sparsity"] + shift,
            scale * sub["value"],
            yerr=_yerr(sub, scale),
            capsize=2,
            elinewidth=0.8,
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


def _point_rows(frame: pd.DataFrame, metric: str, plot: str) -> pd.DataFrame:
    """One row per point (refusing ambiguous ones), with its 95% interval ``lo`` / ``hi``."""
    rows = with_sparsity(frame[frame["metric"] == metric])
    rows = unique_cells(rows, [*ROW_KEY, "sparsity", "metric", "dataset"], plot)
    return intervals.with_bounds(rows)


def _title(model: str, protocol: str, setting: str) -> str:
    return f"{model} ({protocol}{', ' + setting if setting else ''})"


def ppl_vs_sparsity(
    frame: pd.DataFrame,
    model: str,
    protocol: str,
    path: str | Path,
    datasets=None,
    setting: str = "",
) -> Path | None:
    """One panel per dataset: perplexity (log scale) against sparsity, a line per method
    (``setting``: the setting group drawn, named in the title)."""
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
        ax.set_ylabel("perplexity" + (" (bars: 95% interval)" if _has_bars(rows) else ""))
    title = f"{_title(model, protocol, setting)}: perplexity vs sparsity"
    return _finish(fig, axes, title, Path(path))


def _has_bars(rows: pd.DataFrame) -> bool:
    return "lo" in rows.columns and rows["lo"].notna().any()


def _task_mean(rows: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Per (method, sparsity) with every task present: the mean accuracy and its 95%
    interval from the tasks' standard errors (independent: sqrt(sum se^2) / n)."""
    out = []
    for (method, s), sub in rows.groupby(["method", "sparsity"], sort=False):
        if len(sub) != len(tasks):
            continue
        mean, se = float(sub["value"].mean()), intervals.mean_stderr(sub["se"])
        half = intervals.Z95 * se
        out.append((method, s, mean, se, max(mean - half, 0.0), min(mean + half, 1.0), "mean"))
    return pd.DataFrame(out, columns=["method", "sparsity", "value", "se", "lo", "hi", "dataset"])


def acc_vs_sparsity(
    frame: pd.DataFrame,
    model: str,
    protocol: str,
    path: str | Path,
    tasks=None,
    metric: str = "acc",
    setting: str = "",
) -> Path | None:
    """One panel per task plus their mean: accuracy (%) against sparsity, a line per method
    (``setting``: the setting group drawn, named in the title)."""
    rows = frame[(frame["model"] == model) & (frame["protocol"] == protocol)]
    rows = _point_rows(rows, metric, "acc_vs_sparsity")
    if rows.empty:
        return None
    tasks = list(tasks or ordered(rows["dataset"], TASKS))
    rows = rows[rows["dataset"].isin(tasks)]
    mean = _task_mean(rows, tasks)
    style = method_style(ordered(rows["method"], METHOD_ORDER))
    fig, axes = _panels(len(tasks) + 1)
    for ax, name in zip(axes, [*tasks, "mean"], strict=True):
        _draw(ax, mean if name == "mean" else rows[rows["dataset"] == name], style, scale=100)
        ax.set_title(name)
        bars = " (bars: ±1.96 stderr)" if _has_bars(rows) else ""
        ax.set_ylabel(f"{metric} (%){bars}")
    title = f"{_title(model, protocol, setting)}: accuracy vs sparsity"
    if model in SMOKE_TEST_MODELS:
        title = f"SMOKE TEST, not a result: {title}\n({SMOKE_TEST_MODELS[model]}: at chance level)"
    return _finish(fig, axes, title, Path(path))


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


def draws_strip(rows: pd.DataFrame, model: str, protocol: str, path: str | Path) -> Path:
    """Perplexity of every calibration draw per method (and budget), draw 0 filled, the
    geometric mean ×/÷ the geometric standard deviation beside; one panel per dataset."""
    datasets = ordered(rows["dataset"], PPL_DATASETS)
    fig, axes = _panels(len(datasets))
    keys = [k[2:] for k in draws.row_order(list(dict.fromkeys(rows[draws.ROW].itertuples(
        index=False, name=None))))]  # fmt: skip
    labels = [f"{m} ({w} w)\n{100 * s:g}%" for s, m, w in keys]
    for ax, name in zip(axes, datasets, strict=True):
        sub = rows[rows["dataset"] == name]
        for x, (s, m, w) in enumerate(keys):
            pts = sub[(sub["sparsity"] == s) & (sub["method"] == m) & (sub["windows"] == w)]
            if pts.empty:
                continue
            first = pts["calib_seed"] == draws.SEED0
            ax.scatter([x - 0.1] * int((~first).sum()), pts.loc[~first, "value"],
                       marker="o", facecolors="none", edgecolors="C0")  # fmt: skip
            ax.scatter([x - 0.1] * int(first.sum()), pts.loc[first, "value"], marker="o",
                       color="C0", label="draw 0" if x == 0 else None)  # fmt: skip
            mean, factor = draws.geometric(pts["value"])
            factor = 1.0 if np.isnan(factor) else factor
            yerr = [[mean - mean / factor], [mean * factor - mean]]
            ax.errorbar(x + 0.1, mean, yerr=yerr, marker="s", color="C1", capsize=3,
                        label="geometric mean ×/÷ sd" if x == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(keys)), labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("perplexity (each calibration draw)")
        ax.set_title(name)
        ax.grid(alpha=0.3, axis="y")
    return _finish(fig, axes, f"{model} ({protocol}): calibration draws", Path(path))


def _span(values) -> str:
    values = sorted({int(v) for v in values})
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def ablation_plots(frame: pd.DataFrame, out_dir: Path, experiment: str | None) -> list[Path]:
    paths = []
    if draws.applies(frame, experiment):
        rows = draws.draw_rows(frame, experiment)
        for model, protocol, sub in _by_model_protocol(rows):
            path = out_dir / f"calibration_draws_{model}_{protocol}.png"
            paths.append(draws_strip(sub, model, protocol, path))
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


def setting_groups(rows: pd.DataFrame, metric: str, split: bool) -> list[tuple[str, pd.DataFrame]]:
    """``(setting group, its rows)`` of ``metric``'s points; one group ``""`` unless ``split``
    finds configurations that differ in a setting (:func:`analysis.cells.unique_cells`)."""
    if not split:
        return [("", rows)]
    key = [*ROW_KEY, "sparsity", "metric", "dataset"]
    points = unique_cells(with_sparsity(rows[rows["metric"] == metric]), key, "plots", split=True)
    labels = split_labels(points)
    if not labels:
        return [("", rows)]
    return [(g, points[points[SETTING] == g].drop(columns=SETTING)) for g in labels]


def _slug(setting: str) -> str:
    return "_" + re.sub(r"[^A-Za-z0-9._]+", "-", setting).strip("-") if setting else ""


def generic_plots(rows: pd.DataFrame, out_dir: Path, split: bool = False) -> list[Path]:
    """Perplexity and accuracy against sparsity per model and protocol (and setting group,
    with ``split``)."""
    paths = []
    for model, protocol, sub in _by_model_protocol(rows):
        tag = f"{model}_{protocol}"
        for metric, draw, stem in (
            ("ppl", ppl_vs_sparsity, "ppl_vs_sparsity"),
            ("acc", acc_vs_sparsity, "acc_vs_sparsity"),
        ):
            for setting, group in setting_groups(sub, metric, split):
                path = out_dir / f"{stem}_{tag}{_slug(setting)}.png"
                paths.append(draw(group, model, protocol, path, setting=setting))
    return [p for p in paths if p is not None]


def all_plots(
    frame: pd.DataFrame,
    out_dir: str | Path,
    experiment: str | None = None,
    split: bool | None = None,
) -> list[Path]:
    """Every plot that applies to ``experiment``'s rows; returns the files written.

    ``split``: a figure per setting group instead of a refusal (default: unless
    ``experiment`` is published, :func:`analysis.cells.strict`).

    Raises:
        AmbiguousCellError: a point of a generic plot is fed by several configurations, no
            ablation view covers the sweep and the rows are not split.
    """
    out_dir = Path(out_dir)
    rows = select(frame, experiment)
    split = not strict(experiment) if split is None else split
    try:
        paths = ablation_plots(frame, out_dir, experiment)
    except AmbiguousCellError as exc:
        if not split:
            raise
        log.warning("ablation plots left out: %s", exc)
        paths = []
    try:
        paths += generic_plots(rows, out_dir, split)
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
    add_experiment_option(parser)
    args = parser.parse_args(argv)
    args.experiment = chosen(args.experiment)
    out = args.out or default_results_dir() / "plots"
    frame = load(args.results)
    try:
        paths = all_plots(frame, out, args.experiment)
    except AmbiguousCellError as exc:
        print(f"[plots] error: {exc}", file=sys.stderr)
        sys.exit(2)
    paths += inference.render_plots(select(frame, args.experiment), out)
    print(f"[plots] wrote {len(paths)} files to {out}")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
