"""Merge every run's parquet file into one ``results.parquet``.

Each run writes ``<results_dir>/runs/<config_hash>.parquet``; this reads them from one or more
results folders (:func:`twossp.results.read_run`, which upgrades files of the first schema),
keeps for every config hash only the rows of its newest run (``created_at``, then ``run_id``),
and adds two columns the per-run files do not hold:

- ``experiments``: every experiment the configuration belongs to. A configuration is never
  rerun, so one run can serve several experiments; the membership files
  ``<results_dir>/experiments/<experiment>/<config_hash>`` say which (merged over all the
  folders read), plus the experiment named in the run's own rows.
- ``plan_n_attn``: attention submodules a 2SSP run removed (``info.n_attn`` of its plan,
  ``<results_dir>/plans/<config_hash>.json``), null where there is no such plan.

The kept runs' per-unit outcomes (``<results_dir>/items/<config_hash>.parquet``,
:mod:`twossp.items`: each window's NLL, each document's outcome) are merged into a sibling
file, ``results_items.parquet`` beside ``results.parquet`` (:func:`items_file`), with the
same columns, for the config hashes kept only, each from the folder whose run was kept; the
paired comparisons read it (:func:`load_items`, an empty frame when it is absent).

A file that cannot be read is skipped and named in one warning line; the final line counts
them. The merged file is written atomically.

    python -m analysis.collect [--results-dir results] [--extra other/results ...] [--out F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twossp.io import atomic_write
from twossp.items import ITEM_COLUMNS, ITEM_SCHEMA, items_path
from twossp.results import (
    COLUMNS,
    arrow_table,
    concat,
    members,
    method_columns,
    plan_path,
    read_run,
    upgrade_legacy,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = "experiments"
N_ATTN = "plan_n_attn"
EXTRA_COLUMNS = {EXPERIMENTS: pa.list_(pa.string()), N_ATTN: pa.int64()}
SORT = ["model", "protocol", "method", "target_sparsity", "metric", "dataset", "phase"]


def default_results_dir() -> Path:
    """``$TWOSSP_RESULTS`` or ``<repo>/results`` (the same default as ``conf/paths``)."""
    return Path(os.environ.get("TWOSSP_RESULTS", ROOT / "results"))


def results_file(results_dir: Path | None = None) -> Path:
    """The merged file: ``$TWOSSP_RESULTS_FILE``, else ``<results dir>/results.parquet``."""
    env = os.environ.get("TWOSSP_RESULTS_FILE")
    return Path(env) if env else (results_dir or default_results_dir()) / "results.parquet"


def items_file(results_path: str | Path | None = None) -> Path:
    """The merged per-unit outcomes beside a merged results file:
    ``results.parquet`` -> ``results_items.parquet``."""
    path = Path(results_path) if results_path is not None else results_file()
    return path.with_name(f"{path.stem}_items{path.suffix}")


@dataclass
class Collected:
    """The merged rows, the kept runs' per-unit outcomes (an arrow table of
    :data:`twossp.items.ITEM_SCHEMA`) and the files that could not be read."""

    frame: pd.DataFrame
    skipped: list[Path] = field(default_factory=list)
    items: pa.Table = field(default_factory=ITEM_SCHEMA.empty_table)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _read_folder(results_dir: Path, skipped: list[Path]) -> pd.DataFrame:
    """Every readable run file under ``results_dir/runs``, with its plan's ``n_attn``."""
    frames = []
    for path in sorted((results_dir / "runs").glob("*.parquet")):
        try:
            frame = read_run(path)
        except Exception as exc:  # corrupt, foreign or half-upgraded files: never fatal here
            log.warning("skipping unreadable run file %s (%s)", path, _first_line(exc))
            skipped.append(path)
            continue
        frame[N_ATTN] = _plan_n_attn(results_dir, frame)
        frames.append(_settings_as_objects(frame))
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, N_ATTN])
    merged = concat(frames)  # aligns the method.* columns, which differ per method
    merged[N_ATTN] = pd.concat([f[N_ATTN] for f in frames], ignore_index=True)
    return merged


def _settings_as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """``method.*`` columns as Python values, so that merging methods whose settings differ
    keeps integers integers (a numeric column meeting a missing one would turn float)."""
    for col in method_columns(frame):
        frame[col] = pd.Series(
            [v.tolist() if hasattr(v, "tolist") else v for v in frame[col]],
            index=frame.index,
            dtype=object,
        )
    return frame


def _plan_n_attn(results_dir: Path, frame: pd.DataFrame):
    """``info.n_attn`` of a 2SSP run's plan (None when absent or unreadable)."""
    if frame["method"].iloc[0] != "twossp":
        return None
    path = plan_path(results_dir, frame["config_hash"].iloc[0])
    try:
        value = json.loads(path.read_text()).get("info", {}).get("n_attn")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def _memberships(results_dirs: list[Path]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in results_dirs:
        try:
            found = members(d)
        except OSError as exc:
            log.warning("cannot read experiment membership under %s (%s)", d, _first_line(exc))
            continue
        for chash, names in found.items():
            out.setdefault(chash, set()).update(names)
    return out


def experiment_lists(frame: pd.DataFrame, memberships: dict[str, set[str]]) -> list[list[str]]:
    """Per row: its configuration's experiments (membership files plus the row's own)."""
    out = []
    for chash, own in zip(frame["config_hash"], frame["experiment"], strict=True):
        names = set(memberships.get(chash, ()))
        if isinstance(own, str) and own:
            names.add(own)
        out.append(sorted(names))
    return out


def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep, per ``config_hash``, the rows of the newest run (ties broken by ``run_id``)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    runs = frame[["config_hash", "run_id", "created_at"]].drop_duplicates()
    newest = runs.sort_values(["created_at", "run_id"]).groupby("config_hash").tail(1)
    # A reused run (dense copied across a sparsity sweep by older code) shares its run id
    # between config hashes, so a run is the pair (config_hash, run_id).
    pairs = pd.MultiIndex.from_frame(newest[["config_hash", "run_id"]])
    kept = frame[pd.MultiIndex.from_frame(frame[["config_hash", "run_id"]]).isin(pairs)]
    dropped = len(runs) - len(newest)
    if dropped:
        log.info("dropped %d superseded run(s) sharing a config hash", dropped)
    return kept.sort_values(SORT, kind="stable").reset_index(drop=True)


def merge(results_dirs: list[str | Path]) -> Collected:
    """Read and merge the runs under ``results_dirs`` (nothing written)."""
    dirs = [Path(d) for d in results_dirs]
    skipped: list[Path] = []
    read = [(d, _read_folder(d, skipped)) for d in dirs]
    frames = [f for _, f in read if len(f)]
    if frames:
        merged = concat(frames)
        merged[N_ATTN] = pd.concat([f[N_ATTN] for f in frames], ignore_index=True)
    else:
        merged = pd.DataFrame(columns=[*COLUMNS, N_ATTN])
    merged[N_ATTN] = merged[N_ATTN].astype("Int64")
    merged = dedupe(merged)
    merged[EXPERIMENTS] = experiment_lists(merged, _memberships(dirs))
    return Collected(merged, skipped, _kept_items(read, merged, skipped))


def _kept_items(
    read: list[tuple[Path, pd.DataFrame]], merged: pd.DataFrame, skipped: list[Path]
) -> pa.Table:
    """The items files of the kept runs, each read from the folder whose run was kept (a
    missing file: no items; an unreadable one is skipped and named like a run file)."""
    by_folder = {d: set(zip(f["config_hash"], f["run_id"], strict=True)) for d, f in read}
    tables = []
    for chash, run_id in (
        merged[["config_hash", "run_id"]].drop_duplicates().itertuples(index=False, name=None)
    ):
        folder = next((d for d, runs in by_folder.items() if (chash, run_id) in runs), None)
        path = items_path(folder, chash) if folder is not None else None
        if path is None or not path.exists():
            continue
        try:
            with open(path, "rb") as f:
                table = pq.read_table(f)
            table = table.select(ITEM_COLUMNS).cast(ITEM_SCHEMA)
        except Exception as exc:  # corrupt or foreign files: never fatal here
            log.warning("skipping unreadable items file %s (%s)", path, _first_line(exc))
            skipped.append(path)
            continue
        tables.append(table)
    return pa.concat_tables(tables) if tables else ITEM_SCHEMA.empty_table()


def write_merged(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the merged frame atomically: the run schema, ``method.*`` columns typed from
    their values (lists stay lists), then ``experiments`` and ``plan_n_attn``."""
    table = arrow_table(frame)
    for name, kind in EXTRA_COLUMNS.items():
        values = frame[name] if name in frame.columns else [None] * len(frame)
        values = [None if v is None or v is pd.NA else v for v in values]
        table = table.append_column(pa.field(name, kind), pa.array(values, type=kind))
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))
    return Path(path)


def write_items(items: pa.Table, results_path: str | Path) -> Path:
    """Write the merged per-unit outcomes beside ``results_path`` (:func:`items_file`),
    atomically; written even when empty, so a stale file never outlives a merge."""
    path = items_file(results_path)
    atomic_write(path, lambda tmp: pq.write_table(items, tmp))
    return path


def collect(results_dirs: list[str | Path], out: str | Path | None = None) -> pd.DataFrame:
    """Merge the runs under ``results_dirs``; write them (and their items) to ``out`` when
    given."""
    result = merge(results_dirs)
    if out is not None:
        write_merged(result.frame, out)
        write_items(result.items, out)
    return result.frame


def load_items(results_path: str | Path | None = None) -> pd.DataFrame:
    """The merged per-unit outcomes beside a merged results file (default:
    :func:`results_file`); an empty frame with the item columns when there are none."""
    path = items_file(results_path)
    if not path.exists():
        return pd.DataFrame({name: pd.Series(dtype=object) for name in ITEM_COLUMNS})
    with open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def _as_list(value) -> list | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.tolist() if hasattr(value, "tolist") else list(value)


def normalize(frame: pd.DataFrame, path=None) -> pd.DataFrame:
    """A merged frame as Python values: ``versions`` dicts, list settings and
    ``experiments`` as lists; a merged file of the first schema is upgraded."""
    if "protocol" not in frame.columns and "method_config" in frame.columns:
        frame = upgrade_legacy(frame, path or "merged file")
    frame = frame.copy()
    if "versions" in frame.columns:
        frame["versions"] = frame["versions"].map(
            lambda v: v if isinstance(v, dict) else dict(v) if v is not None else {}
        )
    for col in method_columns(frame):
        if frame[col].dtype == object:
            frame[col] = _objects(frame[col], lambda v: v.tolist() if hasattr(v, "tolist") else v)
    if EXPERIMENTS in frame.columns:
        frame[EXPERIMENTS] = _objects(frame[EXPERIMENTS], _as_list)
    return frame


def _objects(column: pd.Series, convert) -> pd.Series:
    """``convert`` applied to each value, kept as objects (``map`` would infer a dtype and
    turn integers beside nulls into floats)."""
    return pd.Series([convert(v) for v in column], index=column.index, dtype=object)


def load(path: str | Path | None = None) -> pd.DataFrame:
    """Read a merged results file (default: :func:`results_file`)."""
    path = Path(path) if path is not None else results_file()
    if not path.exists():
        raise FileNotFoundError(f"no merged results at {path}; run `python -m analysis.collect`")
    with open(path, "rb") as f:
        table = pq.read_table(f)
    frame = table.to_pandas()
    for col in method_columns(frame):  # Python values: integers stay integers beside nulls
        frame[col] = pd.Series(table[col].to_pylist(), index=frame.index, dtype=object)
    return normalize(frame, path)


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
    result = merge([args.results_dir, *args.extra])
    write_merged(result.frame, out)
    write_items(result.items, out)
    frame = result.frame
    skipped = f", {len(result.skipped)} unreadable file(s) skipped" if result.skipped else ""
    with_items = len(set(result.items.column("config_hash").to_pylist()))
    print(
        f"[collect] {frame['config_hash'].nunique()} runs, {len(frame)} rows{skipped}, "
        f"{with_items} with per-unit outcomes -> {out}"
    )
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
