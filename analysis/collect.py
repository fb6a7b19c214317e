"""Merge every run's parquet file into one ``results.parquet``.

Each run writes ``<results_dir>/runs/<config_hash>.parquet``; this concatenates them (from one
or more results folders), keeps, for every config hash, only the rows of its newest run
(``created_at``, then ``run_id``), and writes the merged frame atomically.

    python -m analysis.collect [--results-dir results] [--extra other/results ...] [--out F]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd

from twossp.results import COLUMNS, read_runs, write_run

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def default_results_dir() -> Path:
    """``$TWOSSP_RESULTS`` or ``<repo>/results`` (the same default as ``conf/paths``)."""
    return Path(os.environ.get("TWOSSP_RESULTS", ROOT / "results"))


def results_file(results_dir: Path | None = None) -> Path:
    """The merged file: ``$TWOSSP_RESULTS_FILE``, else ``<results dir>/results.parquet``."""
    env = os.environ.get("TWOSSP_RESULTS_FILE")
    return Path(env) if env else (results_dir or default_results_dir()) / "results.parquet"


def load(path: str | Path | None = None) -> pd.DataFrame:
    """Read a merged results file (default: :func:`results_file`)."""
    path = Path(path) if path is not None else results_file()
    if not path.exists():
        raise FileNotFoundError(f"no merged results at {path}; run `python -m analysis.collect`")
    return pd.read_parquet(path)


def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep, per ``config_hash``, the rows of the newest run (ties broken by ``run_id``)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    runs = frame[["config_hash", "run_id", "created_at"]].drop_duplicates()
    newest = runs.sort_values(["created_at", "run_id"]).groupby("config_hash").tail(1)
    # A reused run (dense copied across a sparsity sweep) shares its run id between config
    # hashes, so a run is the pair (config_hash, run_id).
    pairs = pd.MultiIndex.from_frame(newest[["config_hash", "run_id"]])
    kept = frame[pd.MultiIndex.from_frame(frame[["config_hash", "run_id"]]).isin(pairs)]
    dropped = len(runs) - len(newest)
    if dropped:
        log.info("dropped %d superseded run(s) sharing a config hash", dropped)
    return kept.sort_values(
        ["model", "method", "target_sparsity", "metric", "dataset"], kind="stable"
    ).reset_index(drop=True)


def collect(results_dirs: list[str | Path], out: str | Path | None = None) -> pd.DataFrame:
    """Merge the runs under ``results_dirs``; write them to ``out`` when given."""
    frames = [read_runs(d) for d in results_dirs]
    frames = [f for f in frames if not f.empty]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    merged = dedupe(merged[COLUMNS])
    if out is not None:
        write_run(merged, Path(out))  # the run-file writer: same schema, atomic
    return merged


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=default_results_dir(),
        help="folder holding runs/*.parquet (default: %(default)s)",
    )
    parser.add_argument(
        "--extra", type=Path, nargs="*", default=[], help="further results folders to merge in"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="merged file (default: $TWOSSP_RESULTS_FILE or <results-dir>/results.parquet)",
    )
    args = parser.parse_args(argv)
    out = args.out or results_file(args.results_dir)
    merged = collect([args.results_dir, *args.extra], out)
    print(f"[collect] {merged['config_hash'].nunique()} runs, {len(merged)} rows -> {out}")
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
