"""What ``results.ipynb`` needs besides tables and plots: the merged file, kept current, and
the order in which experiments are shown.

- :func:`results_path`: ``$TWOSSP_RESULTS_FILE`` as given; else ``<results dir>/results.parquet``,
  merged again (:mod:`analysis.collect`) when it is missing or older than a run, items,
  membership or plan file of that folder, so the notebook runs right after ``twossp-run``.
- :func:`experiments`: ``$TWOSSP_EXPERIMENT``, else every experiment of the file, those with
  rows of a real model (:data:`LEAD_MODELS`, SmolLM2-135M) first.
- :func:`heading`: an experiment's heading, naming its models and marking smoke-test models
  (:data:`analysis.captions.SMOKE_TEST_MODELS`).
- :func:`experiment_tables`: every table of an experiment (ablation views, the paper's
  tables with paired verdicts from the per-unit items, the paired comparison view, the
  inference speed-up table) and a line for each table not rendered; a user's own runs are
  split into setting groups, never refused (:func:`analysis.cells.strict`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from analysis import ablations, collect, tables
from analysis.captions import SMOKE_TEST_MODELS
from analysis.cells import AmbiguousCellError, select
from analysis.order import MODEL_ORDER, ordered
from analysis.render import Table

log = logging.getLogger(__name__)

# Real models on which methods can be told apart: their experiments lead the notebook.
LEAD_MODELS = ("smollm2_135m",)


def _newest_input(results_dir: Path) -> float:
    """The newest modification time of the files a merge reads (0 when there are none)."""
    patterns = ("runs/*.parquet", "items/*.parquet", "experiments/*/*", "plans/*.json")
    times = [p.stat().st_mtime for pat in patterns for p in results_dir.glob(pat) if p.is_file()]
    return max(times, default=0.0)


def stale(results_dir: str | Path, merged: str | Path) -> bool:
    """True when ``merged`` is missing or older than a file of ``results_dir`` it merges."""
    merged = Path(merged)
    if not merged.exists():
        return True
    return _newest_input(Path(results_dir)) > merged.stat().st_mtime


def results_path(root: str | Path | None = None) -> Path:
    """The merged results file for the notebook, merged again when stale.

    Args:
        root: the checkout, whose ``results/`` is the default results folder.

    Raises:
        FileNotFoundError: ``$TWOSSP_RESULTS_FILE`` names a missing file, or the results
            folder holds no run (with the command that makes one).
    """
    explicit = os.environ.get("TWOSSP_RESULTS_FILE")
    if explicit:
        return Path(explicit)
    default = Path(root) / "results" if root is not None else collect.default_results_dir()
    results_dir = Path(os.environ.get("TWOSSP_RESULTS", default))
    merged = results_dir / "results.parquet"
    if not stale(results_dir, merged):
        return merged
    if not any((results_dir / "runs").glob("*.parquet")):
        raise FileNotFoundError(
            f"no runs under {results_dir / 'runs'}: run e.g. `twossp-run model=stories260k` "
            "first, or set TWOSSP_RESULTS (results folder) or TWOSSP_RESULTS_FILE (merged file)"
        )
    result = collect.merge([results_dir])
    collect.write_merged(result.frame, merged)
    log.info("merged %d runs into %s", result.frame["config_hash"].nunique(), merged)
    return merged


def experiments(frame: pd.DataFrame) -> list[str]:
    """The experiments to show: ``$TWOSSP_EXPERIMENT``, else all, real models' first."""
    if os.environ.get("TWOSSP_EXPERIMENT"):
        return [os.environ["TWOSSP_EXPERIMENT"]]
    names = sorted({e for listed in frame[collect.EXPERIMENTS] for e in listed})

    def leads(name: str) -> bool:
        return bool(set(select(frame, name)["model"]) & set(LEAD_MODELS))

    return sorted(names, key=lambda n: (not leads(n), n))


def heading(frame: pd.DataFrame, name: str) -> str:
    """``"cpu_demo: stories260k (smoke test: ...)"``: the experiment and its models."""
    models = ordered(select(frame, name)["model"], (*LEAD_MODELS, *MODEL_ORDER))
    parts = [
        f"{m} (smoke test: {SMOKE_TEST_MODELS[m]}, downstream accuracies at chance)"
        if m in SMOKE_TEST_MODELS
        else m
        for m in models
    ]
    return f"{name}: {', '.join(parts)}"


def experiment_tables(
    frame: pd.DataFrame, name: str, items: pd.DataFrame | None = None
) -> tuple[list[Table], list[str]]:
    """The tables the notebook shows for experiment ``name`` and what was not rendered.

    Args:
        frame: the merged results.
        name: the experiment.
        items: the per-unit outcomes (:func:`analysis.collect.load_items`) the paired
            verdicts and the comparison view read.

    Returns:
        The tables (:func:`analysis.tables.experiment_tables`, then the inference speed-up
        table when runs recorded inference rows) and one line per table not rendered
        (:func:`analysis.tables.refusal_lines`; only a published experiment refuses).
    """
    refused: list[str] = []
    built = tables.experiment_tables(frame, name, skipped=refused, items=items)
    try:
        speed = tables.speedup(frame, name)
    except AmbiguousCellError as exc:
        speed = None
        refused.append(str(exc))
    built += [speed] if speed is not None else []
    views = any(ablations.is_view(t.name) for t in built)
    return built, tables.refusal_lines(refused, views)
