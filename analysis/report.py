"""Results pages written from the record, and the experiment's tables in W&B.

One command turns the run files of one or more experiments into ``docs/results/<name>.md``:
where and when the runs ran (dates, commits, device, dtype, threads, library versions), the
budget every method read, the verdict sentences the paired tests give
(:func:`analysis.comparison.comparisons`), every table of the experiments
(:func:`analysis.tables.experiment_tables`, the paired comparison view and the inference
speed-up table among them) and their plots, written beside the page. Nothing on the page is
typed by hand and nothing depends on when it was generated, so the same record gives the same
page byte for byte (``tests/test_report.py``).

With ``--logger wandb`` the same tables go to W&B as ``wandb.Table`` objects, and the plots as
images, in one summary run per page (job type ``report``, grouped by the page's name);
``WANDB_MODE=offline`` (or no API key) writes it offline for ``wandb sync``.

    python -m analysis.report --experiment cpu_smollm2_authors [--experiment ...]
        [--record docs/results/record] [--out docs/results] [--name NAME] [--logger wandb]

``make report EXPERIMENT=<name>`` runs it on the committed record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from analysis import comparison, inference
from analysis.cells import AmbiguousCellError, replayed, select
from analysis.claims import at_chance, claim_sentences
from analysis.collect import merge
from analysis.plots import all_plots
from analysis.published import load_published
from analysis.render import Table
from analysis.tables import experiment_tables
from analysis.tables import speedup as speedup_table

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "results" / "record"
PAGES = ROOT / "docs" / "results"
REPORT_JOB = "report"


def _items_frame(items) -> pd.DataFrame:
    return items.to_pandas() if hasattr(items, "to_pandas") else items


def _span(times: pd.Series) -> str:
    times = pd.to_datetime(times, utc=True)
    first, last = times.min(), times.max()
    fmt = "%Y-%m-%d %H:%M UTC"
    if first.date() == last.date():
        return f"{first.strftime(fmt)} to {last.strftime('%H:%M')} UTC"
    return f"{first.strftime(fmt)} to {last.strftime(fmt)}"


def _values(series: pd.Series) -> str:
    seen = [str(v) for v in dict.fromkeys(series.dropna())]
    return ", ".join(seen) if seen else "not recorded"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def wall_time(runs: pd.DataFrame) -> str:
    """The runs' wall time (each from its start to its file's write), where they recorded a
    start; runs recorded before starts were kept are counted apart."""
    if "started_at" not in runs:
        return "not recorded"
    start = pd.to_datetime(runs["started_at"], utc=True)
    end = pd.to_datetime(runs["created_at"], utc=True)
    known = start.notna()
    if not known.any():
        return "not recorded (these runs predate start times)"
    summed = _duration((end - start)[known].dt.total_seconds().sum())
    text = f"{summed} over {int(known.sum())} runs (sum of each run's start to its write)"
    if known.all():
        span = _duration((end.max() - start.min()).total_seconds())
        text += f"; first start to last write {span}"
    else:
        text += f"; {int((~known).sum())} runs predate start times"
    return text


def pruning_seconds(runs: pd.DataFrame) -> float:
    """The seconds the runs spent pruning (one row per run), replayed plans left out."""
    return float(runs["prune_seconds"][~replayed(runs)].astype(float).sum())


def where_it_ran(rows: pd.DataFrame) -> list[str]:
    """The page's account of the runs: how many, when, on what, with which code."""
    runs = rows.drop_duplicates("config_hash")
    versions = runs["versions"].map(lambda v: v if isinstance(v, dict) else {})
    libs = {
        name: _values(versions.map(lambda v, n=name: v.get(n)))
        for name in ("torch", "transformers", "lm_eval")
    }
    pruning = f"{pruning_seconds(runs):.0f} s (sum of `prune_seconds`)"
    if replayed(runs).any():
        pruning += (
            f"; {int(replayed(runs).sum())} runs replayed the plan of a finished run with the "
            "same pruning (`plan_from`) and are not counted"
        )
    return [
        "| | |",
        "|---|---|",
        f"| runs | {len(runs)} ({', '.join(dict.fromkeys(runs['method']))}) |",
        f"| written | {_span(runs['created_at'])} (each run file's write time) |",
        f"| wall time | {wall_time(runs)} |",
        f"| pruning time, all runs | {pruning} |",
        f"| models | {_values(runs['model'])} |",
        f"| device / dtype | {_values(runs['device'])} / {_values(runs['dtype'])} |",
        f"| CPU threads | {_values(runs['threads'].astype('Int64'))} |",
        f"| commits | {_values(runs['git_sha'].map(lambda s: str(s)[:12]))} |",
        f"| libraries | {'; '.join(f'{k} {v}' for k, v in libs.items())} |",
    ]


def _settings(row: pd.Series) -> str:
    parts = []
    for col, value in row.items():
        if not col.startswith("method.") or value is None or value != value:
            continue
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        parts.append(f"{col.removeprefix('method.')}={text}")
    return ", ".join(parts)


def budgets(rows: pd.DataFrame) -> list[str]:
    """What every method read: calibration windows x tokens, and its settings."""
    runs = rows.drop_duplicates("config_hash")
    runs = runs.drop_duplicates(["method", "calib_windows", "calib_seqlen", "protocol"])
    lines = ["| method | protocol | calibration read | settings |", "|---|---|---|---|"]
    for _, r in runs.iterrows():
        read = "none"
        if r["calib_windows"] == r["calib_windows"] and r["calib_windows"] is not None:
            read = f"{int(r['calib_windows'])} x {int(r['calib_seqlen'])} tokens"
        lines.append(f"| {r['method']} | {r['protocol']} | {read} | {_settings(r)} |")
    return lines


def verdicts(found: pd.DataFrame | None, reference: str, apart=()) -> list[str]:
    """The verdict sentences of the paired comparison view, one bullet each; those on the
    tasks ``apart`` (dense not above chance) come last, under a line saying they are no
    evidence."""
    if found is None:
        return [f"No paired comparison: no {reference} runs beside other methods."]
    said = found[found["sentence"].map(lambda s: isinstance(s, str) and bool(s))]
    chance = said["metric"].isin(("acc", "acc_norm")) & said["dataset"].isin(apart)
    lines = [f"- {s}" for s in said[~chance]["sentence"]]
    if chance.any():
        names = ", ".join(comparison.DATASET_NAMES.get(t, t) for t in apart)
        lines += [
            "",
            f"The dense model is not above chance on {names} (a one-sided binomial test at "
            "0.05): the verdicts on these tasks are reported apart and are evidence for "
            "nothing.",
            "",
            *[f"- {s}" for s in said[chance]["sentence"]],
        ]
    return lines


def claims(found, frame, items, experiments) -> list[str]:
    """One bullet per claim of the paper (:mod:`analysis.claims`)."""
    if found is None:
        return ["No claim can be judged: no 2SSP runs beside other methods."]
    return [f"- {s}" for s in claim_sentences(found, frame, items, experiments)]


def page_tables(
    frame: pd.DataFrame, items: pd.DataFrame, experiments, reference: str, refused: list[str]
) -> list[Table]:
    """Every table of the experiments, then the inference speed-up table when it applies."""
    tables = experiment_tables(
        frame, experiments, load_published(), refused, items=items, reference=reference
    )
    try:
        speedup = speedup_table(frame, experiments)
    except AmbiguousCellError as exc:
        refused.append(f"inference_speedup: {exc}")
        speedup = None
    return tables + ([speedup] if speedup is not None else [])


def replay_sections(record: Path, experiments: list[str]) -> list[str]:
    """Each experiment's inference replay (``bench.inference_replay``), where one was saved
    under ``<record>/inference_replay/<experiment>/``: its speed-up and overhead tables."""
    lines: list[str] = []
    for experiment in experiments:
        folder = Path(record) / "inference_replay" / experiment
        if not (folder / "inference_replay.json").is_file():
            continue
        from bench.inference_replay import rendered  # torch and the models: only when needed

        lines += [
            f"## What pruning buys, as deployed: `{experiment}` re-timed",
            "",
            f"_Every model of `{experiment}` rebuilt and timed in one process, in shuffled "
            f"rounds, eager and compiled (`python -m bench.inference_replay`; saved in "
            f"`{_shown(folder)}/inference_replay.json`)._",
            "",
            rendered(folder),
        ]
    return lines


def paired_view(frame, items, reference: str, experiments: list[str]) -> pd.DataFrame | None:
    """The paired comparisons of ``reference`` with every other method (None: no such runs);
    calibration draws are compared within each draw (:func:`analysis.comparison.by_draw`)."""
    if not comparison.applies(frame, reference, experiments):
        return None
    split = comparison.by_draw(frame, experiments)
    return comparison.comparisons(frame, items, reference, experiments, split)


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when inside it (pages never name this machine)."""
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def build_page(
    name: str,
    frame: pd.DataFrame,
    items: pd.DataFrame,
    experiments: list[str],
    plots: list[Path],
    page_dir: Path,
    reference: str = comparison.REFERENCE,
    record: Path = RECORD,
) -> tuple[str, list[Table]]:
    """The page's Markdown and its tables (for W&B)."""
    rows = select(frame, experiments)
    refused: list[str] = []
    tables = page_tables(frame, items, experiments, reference, refused)
    found = paired_view(frame, items, reference, experiments)
    apart = []
    if found is not None:
        tasks = found[found["metric"].isin(("acc", "acc_norm"))]["dataset"]
        apart = at_chance(tasks, frame, items, experiments)
    command = " ".join(f"--experiment {e}" for e in experiments)
    if Path(record).resolve() != RECORD.resolve():
        command += f" --record {_shown(record)}"
    lines = [
        f"# Results: {name}",
        "",
        f"_Generated from the record in `{_shown(record)}/` by "
        f"`python -m analysis.report {command}` (`make report`); do not edit by hand. "
        "Every number below is recomputed from the run files, and every verdict comes from a "
        "paired test._",
        "",
        f"Experiments: {', '.join(f'`{e}`' for e in experiments)} "
        "(their settings and every reduction against the paper: `conf/experiment/<name>.yaml`).",
        "",
        "## Where it ran",
        "",
        *where_it_ran(rows),
        "",
        "## What each method read",
        "",
        *budgets(rows),
        "",
        "## The paper's claims",
        "",
        *claims(found, frame, items, experiments),
        "",
        f"## Verdicts ({comparison.method_name(reference)} against every other method and dense)",
        "",
        *verdicts(found, reference, apart),
        "",
        "## Tables",
        "",
    ]
    for table in tables:
        lines += [table.to_markdown(), ""]
    for reason in refused:
        lines += [f"_Not rendered: {reason}_", ""]
    lines += replay_sections(record, experiments)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(page_dir).as_posix()})" for p in plots]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n", tables


def table_frame(table: Table) -> pd.DataFrame:
    """A table's printed cells as a flat frame (what W&B shows)."""
    names = table.row_names
    rows = []
    for i, index in enumerate(table.values.index):
        index = index if isinstance(index, tuple) else (index,)
        rows.append([*map(str, index), *table._cells(i, "{}")])
    return pd.DataFrame(rows, columns=[*names, *table.headers()])


def log_to_wandb(name: str, tables: list[Table], plots: list[Path], sentences: list[str], settings):
    """One summary run: every table as a ``wandb.Table``, every plot as an image."""
    import wandb

    from twossp.tracking import WandbTracker

    WandbTracker(settings).check()  # installed; online without a key falls back to offline
    if settings.dir is not None:
        Path(settings.dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings.project,
        entity=settings.entity,
        group=settings.group or name,
        name=settings.run_name or f"{name}-{REPORT_JOB}",
        job_type=REPORT_JOB,
        tags=[*settings.tags, REPORT_JOB],
        dir=settings.dir,
        mode=settings.mode,
        reinit="finish_previous",
    )
    try:
        logged = {t.name: wandb.Table(dataframe=table_frame(t)) for t in tables}
        logged["verdicts"] = wandb.Table(columns=["verdict"], data=[[s] for s in sentences])
        logged.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.log(logged)
        folder = Path(run.dir).parent if settings.mode != "disabled" else None
    finally:
        run.finish()
    return folder


def load_record(record: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The record's result rows and per-unit items."""
    merged = merge([record])
    return merged.frame, _items_frame(merged.items)


def render_part(
    name: str,
    frame: pd.DataFrame,
    items: pd.DataFrame,
    experiments: list[str],
    out: Path,
    reference: str = comparison.REFERENCE,
    record: Path = RECORD,
) -> tuple[str, list[Table], list[Path]]:
    """One page's Markdown, tables and plots (drawn into ``<out>/<name>/``)."""
    if select(frame, experiments).empty:
        raise ValueError(f"no runs of {experiments} under {_shown(record)}")
    plot_dir = out / name
    try:
        plots = all_plots(frame, plot_dir, experiments)
        plots += inference.render_plots(select(frame, experiments), plot_dir)
    except AmbiguousCellError as exc:
        log.warning("plots not drawn: %s", exc)
        plots = []
    text, tables = build_page(
        name, frame, items, experiments, sorted(plots), out, reference, record
    )
    return text, tables, sorted(plots)


def report(
    experiments: list[str],
    record: Path = RECORD,
    out: Path = PAGES,
    name: str | None = None,
    reference: str = comparison.REFERENCE,
) -> tuple[Path, list[Table], list[Path], list[str]]:
    """Write ``<out>/<name>.md`` and its plots (``<out>/<name>/``) from ``record``."""
    name = name or experiments[0]
    frame, items = load_record(record)
    text, tables, plots = render_part(name, frame, items, experiments, out, reference, record)
    page = out / f"{name}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    sentences = [line[2:] for line in text.splitlines() if line.startswith("- ")]  # bullets
    return page, tables, sorted(plots), sentences


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a results page from the record.")
    parser.add_argument("--experiment", action="append", required=True)
    parser.add_argument("--record", type=Path, default=RECORD, help="a results folder")
    parser.add_argument("--out", type=Path, default=PAGES, help="where pages are written")
    parser.add_argument("--name", default=None, help="the page's name (default: first experiment)")
    parser.add_argument("--reference", default=comparison.REFERENCE)
    parser.add_argument("--logger", choices=("none", "wandb"), default="none")
    args = parser.parse_args(argv)
    try:
        page, tables, plots, sentences = report(
            args.experiment, args.record, args.out, args.name, args.reference
        )
    except ValueError as exc:
        print(f"[report] error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"[report] wrote {page} ({len(tables)} tables, {len(plots)} plots)")
    if args.logger == "wandb":
        from twossp.tracking import WandbSettings

        settings = WandbSettings(
            mode=os.environ.get("WANDB_MODE", "online"), dir=os.environ.get("WANDB_DIR")
        )
        folder = log_to_wandb(page.stem, tables, plots, sentences, settings)
        print(f"[report] W&B ({settings.mode}): {len(tables)} tables, {len(plots)} images {folder}")
    return page


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
