"""Tidy result rows in parquet: one file per run, written atomically, typed columns.

Each row is one measured value (``metric`` on ``dataset``, or a peak-memory ``phase``) plus
everything needed to place it: config hash, protocol, git sha, library versions, the model's
resolved source, revision or fingerprint, dtype and device, the method and each of its
settings as a typed ``method.<setting>`` column, the calibration actually read, target and
achieved sparsity, parameter counts and pruning time. Analysis merges the per-run files; W&B
only mirrors them.

Files written before these columns existed (``method_config`` as a JSON string, a text
``created_at``, memory phases in ``dataset``) are still read: :func:`read_run` upgrades them
in memory and says so once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twossp.io import atomic_write

log = logging.getLogger(__name__)

METHOD_PREFIX = "method."
# The record's fixed columns: (name, arrow type, unit, meaning). One source: the schema, the
# column reference (docs/columns.md, written by ``python -m twossp.columns``) and its test.
RUN_COLUMNS = [
    (
        "run_id",
        pa.string(),
        None,
        "random id of this execution (a rerun with force=true gets a new one)",
    ),
    (
        "config_hash",
        pa.string(),
        None,
        "hash of everything that can change the numbers (twossp/run_spec.py); names the files",
    ),
    (
        "experiment",
        pa.string(),
        None,
        "experiment_name of the run that computed the row (membership: results/experiments/)",
    ),
    (
        "protocol",
        pa.string(),
        None,
        "budget rule: paper (the authors') or matched (nearest reachable budget)",
    ),
    (
        "git_sha",
        pa.string(),
        None,
        "commit the run's process started from, with -dirty when tracked files differed",
    ),
    (
        "versions",
        pa.map_(pa.string(), pa.string()),
        None,
        "versions of torch, transformers, datasets, lm_eval, twossp",
    ),
    ("created_at", pa.timestamp("us", tz="UTC"), "UTC", "when the run file was written"),
    (
        "started_at",
        pa.timestamp("us", tz="UTC"),
        "UTC",
        "when the run began (settings checked, lock held); created_at - started_at is its wall "
        "time (null: recorded before runs kept it)",
    ),
    ("model", pa.string(), None, "model config key (conf/model/<key>.yaml)"),
    ("model_path", pa.string(), None, "the model's resolved source: a local folder or a hub id"),
    ("model_revision", pa.string(), None, "hub commit the revision resolved to (hub models)"),
    (
        "model_fingerprint",
        pa.string(),
        None,
        "fingerprint of the local weight files (local models)",
    ),
    ("dtype", pa.string(), None, "resolved dtype the model computed in"),
    ("device", pa.string(), None, "device kind: cpu or cuda"),
    ("method", pa.string(), None, "pruning method (conf/method/<name>.yaml; dense: unpruned)"),
    (
        "target_sparsity",
        pa.float64(),
        "fraction",
        "requested fraction of decoder-block parameters to remove (0 for dense)",
    ),
    (
        "achieved_sparsity",
        pa.float64(),
        "fraction",
        "fraction of decoder-block parameters removed, measured after surgery",
    ),
    ("params_before", pa.int64(), "parameters", "parameters of the model before pruning"),
    ("params_after", pa.int64(), "parameters", "parameters after pruning"),
    ("block_params_before", pa.int64(), "parameters", "decoder-block parameters before pruning"),
    ("block_params_after", pa.int64(), "parameters", "decoder-block parameters after pruning"),
    (
        "prune_seconds",
        pa.float64(),
        "s",
        "wall-clock seconds in method.prune (calibration loading and evaluation excluded)",
    ),
    ("seed", pa.int64(), None, "run seed (torch, method searches)"),
    ("calib_dataset", pa.string(), None, "calibration corpus name (null: the method reads none)"),
    (
        "calib_source",
        pa.string(),
        None,
        "where the calibration text came from: local file name or hub id",
    ),
    ("calib_n_samples", pa.int64(), "windows", "calibration windows the method asked for"),
    ("calib_seqlen", pa.int64(), "tokens", "tokens per calibration window"),
    (
        "calib_seed",
        pa.int64(),
        None,
        "calibration draw: 0 reads documents in file order, others shuffle them",
    ),
    (
        "calib_packing",
        pa.string(),
        None,
        "stream (consecutive windows of the joined corpus) or documents (packed one by one)",
    ),
    ("calib_windows", pa.int64(), "windows", "calibration windows actually read"),
    ("threads", pa.int64(), "threads", "CPU threads torch computed with (recorded, not hashed)"),
    (
        "plan_from",
        pa.string(),
        None,
        "config hash of the finished run whose plan this run replayed instead of pruning "
        "(same pruning, other evaluation; prune_seconds are that run's); null: pruned here",
    ),
]
METRIC_COLUMNS = [
    (
        "metric",
        pa.string(),
        None,
        "what was measured: ppl, acc, acc_norm, prefill_latency, decode_throughput, "
        "kv_cache_bytes_per_token, weight_bytes, prefill_peak_bytes, peak_memory_gib",
    ),
    (
        "dataset",
        pa.string(),
        None,
        "perplexity corpus or lm-eval task the value is on (null for model-wide rows)",
    ),
    ("phase", pa.string(), None, "prune or eval, for peak_memory_gib rows"),
    ("value", pa.float64(), "see unit", "the measured value (accuracy as a fraction in [0, 1])"),
    ("unit", pa.string(), None, "unit of value where it has one (ms, tokens/s, bytes, GiB)"),
    (
        "ci_low",
        pa.float64(),
        "as value",
        "lower end of the value's 95% interval (perplexity: t interval over windows; "
        "accuracy: value - 1.96 stderr)",
    ),
    ("ci_high", pa.float64(), "as value", "upper end of the value's 95% interval"),
    (
        "variant",
        pa.string(),
        None,
        "JSON of evaluation details: windows scored and available, window_sample, tokens, "
        "window_nll, task version, shots, limit, samples, stderr, timing spread "
        "(docs/columns.md lists the keys)",
    ),
]
# Columns after the fixed ones: one per method setting.
PATTERN_COLUMNS = [
    (
        "method.<setting>",
        "typed from its values",
        None,
        "each setting of the run's method, defaults included (e.g. method.alpha)",
    ),
]
RUN_FIELDS = [(name, kind) for name, kind, _, _ in RUN_COLUMNS]
METRIC_FIELDS = [(name, kind) for name, kind, _, _ in METRIC_COLUMNS]
SCHEMA = pa.schema(RUN_FIELDS + METRIC_FIELDS)  # the fixed part; method.* columns follow
COLUMNS = SCHEMA.names
_PACKAGES = ("torch", "transformers", "datasets", "lm_eval", "twossp")


@dataclass
class RunRecord:
    """Facts shared by every row of one run.

    ``method_params`` holds every setting of the method (defaults included); each becomes a
    ``method.<name>`` column. ``calib`` holds the calibration actually read (None for a
    method that reads none).
    """

    run_id: str
    config_hash: str
    experiment: str
    model: str
    model_path: str
    method: str
    method_params: dict
    target_sparsity: float
    achieved_sparsity: float
    params_before: int
    params_after: int
    block_params_before: int
    block_params_after: int
    prune_seconds: float
    seed: int
    protocol: str = "paper"
    model_revision: str | None = None
    model_fingerprint: str | None = None
    dtype: str | None = None
    device: str | None = None
    calib: dict | None = None
    threads: int | None = None  # CPU threads torch computed with
    plan_from: str | None = None  # the run whose plan was replayed (twossp.reuse)
    started_at: datetime | None = None  # when the run began; created_at: when it was written
    git_sha: str = field(default_factory=lambda: STARTED_FROM)
    versions: dict = field(default_factory=lambda: library_versions())


@dataclass
class Metric:
    """One measured value: ``metric`` on ``dataset`` (or, for memory, during ``phase``),
    in ``unit`` when it has one, with a 95% interval ``[ci_low, ci_high]`` when one is known."""

    metric: str
    dataset: str | None
    value: float
    variant: dict = field(default_factory=dict)
    phase: str | None = None
    unit: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_sha() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# The commit this process started from: the code a long sweep runs is the code it imported,
# whatever HEAD becomes while it runs (a run records this, not HEAD at the time it finishes).
STARTED_FROM = git_sha()


def library_versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _column_value(value):
    """A setting as a parquet-friendly value: scalars as they are, sequences as lists."""
    if isinstance(value, tuple):
        return list(value)
    return value


def run_columns(record: RunRecord) -> dict:
    """The run's own columns (every row of the run carries them), ``method.*`` included."""
    base = asdict(record)
    params = base.pop("method_params")
    calib = base.pop("calib") or {}
    base.update({f"calib_{k}": calib.get(k) for k in _CALIB_KEYS})
    base["versions"] = list(record.versions.items())
    base.update({f"{METHOD_PREFIX}{k}": _column_value(v) for k, v in sorted(params.items())})
    return base


def to_frame(record: RunRecord, metrics: list[Metric]) -> pd.DataFrame:
    base = run_columns(record)
    base["created_at"] = pd.Timestamp(datetime.now(timezone.utc))
    base["started_at"] = None if record.started_at is None else pd.Timestamp(record.started_at)
    settings = [c for c in base if c.startswith(METHOD_PREFIX)]
    rows = [
        {**base, **asdict(m), "variant": json.dumps(m.variant, sort_keys=True)} for m in metrics
    ]
    return pd.DataFrame(rows, columns=COLUMNS + settings)


_CALIB_KEYS = ("dataset", "source", "n_samples", "seqlen", "seed", "packing", "windows")


def method_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(METHOD_PREFIX)]


def method_settings(row) -> dict:
    """The method settings of one row (a Series), missing ones dropped."""
    return {
        k[len(METHOD_PREFIX) :]: v
        for k, v in row.items()
        if k.startswith(METHOD_PREFIX) and not _missing(v)
    }


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an arrow table: the fixed schema, then each ``method.*`` column typed
    from its values (missing values as nulls)."""
    fields = list(SCHEMA)
    for col in method_columns(frame):
        values = [None if _missing(v) else v for v in frame[col]]
        fields.append(pa.field(col, pa.array(values).type))
    columns = []
    for f in fields:
        values = frame[f.name]
        if f.name.startswith(METHOD_PREFIX) or f.name == "versions":
            values = [None if _missing(v) else v for v in values]
        columns.append(pa.array(values, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def run_path(results_dir: str | Path, config_hash_: str) -> Path:
    return Path(results_dir) / "runs" / f"{config_hash_}.parquet"


def plan_path(results_dir: str | Path, config_hash_: str) -> Path:
    return Path(results_dir) / "plans" / f"{config_hash_}.json"


def lm_eval_path(results_dir: str | Path, config_hash_: str) -> Path:
    """lm-eval's full output of a run (results, stderrs, task configs), beside its plan."""
    return Path(results_dir) / "plans" / f"{config_hash_}.lm_eval.json"


def write_run(frame: pd.DataFrame, path: Path) -> Path:
    table = arrow_table(frame)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


class CorruptRunError(ValueError):
    """A run file that cannot be read back (truncated, not parquet, no rows)."""


def read_runs(results_dir: str | Path, skipped: list | None = None) -> pd.DataFrame:
    """Every readable run's rows under ``results_dir``, in one frame.

    Unreadable files are left out and named in a warning (and appended to ``skipped``).
    """
    files = sorted((Path(results_dir) / "runs").glob("*.parquet"))
    frames = []
    for f in files:
        try:
            frames.append(read_run(f))
        except CorruptRunError as exc:
            log.warning("skipping unreadable run file %s (%s)", f, exc)
            if skipped is not None:
                skipped.append(f)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return concat(frames)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate run frames whose ``method.*`` columns differ (missing -> None)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    extra = sorted({c for f in frames for c in method_columns(f)})
    # Settings stay Python objects, so an int setting is not widened to float by a frame
    # that lacks it (missing values are None).
    aligned = [
        f.reindex(columns=COLUMNS + extra).astype({c: object for c in extra}) for f in frames
    ]
    merged = pd.concat(aligned, ignore_index=True)
    for col in extra:
        values = [None if _missing(v) else v for v in merged[col]]
        merged[col] = pd.Series(values, index=merged.index, dtype=object)
    return merged


_LEGACY_WARNED: set[str] = set()
_LATER_METRIC_COLUMNS = ("unit", "ci_low", "ci_high")
_LATER_RUN_COLUMNS = ("threads", "plan_from", "started_at")


def read_run(path: str | Path) -> pd.DataFrame:
    """One run file, upgraded to the current columns if it predates them.

    It is opened once: pyarrow opening a path twice (footer, then pages) could pair two
    versions of a file that a concurrent job replaces in between.

    Raises:
        CorruptRunError: the file is not a readable parquet file with rows.
    """
    try:
        with open(path, "rb") as f:
            frame = pd.read_parquet(f)
    except Exception as exc:  # truncated or foreign files raise arrow / OS errors of many kinds
        raise CorruptRunError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if frame.empty or "config_hash" not in frame.columns:
        raise CorruptRunError(f"{path}: no result rows")
    if "protocol" not in frame.columns:
        try:
            frame = upgrade_legacy(frame, path)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptRunError(f"{path}: not a run file of any known schema ({exc})") from exc
    for col in _LATER_METRIC_COLUMNS + _LATER_RUN_COLUMNS:  # files older than these columns
        if col not in frame.columns:
            frame[col] = None
    frame["versions"] = frame["versions"].map(_as_dict)
    for col in method_columns(frame):
        if frame[col].dtype == object:  # parquet lists come back as numpy arrays
            frame[col] = frame[col].map(lambda v: v.tolist() if hasattr(v, "tolist") else v)
    return frame


def _as_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return json.loads(value)
    return dict(value) if value is not None else {}


def upgrade_legacy(frame: pd.DataFrame, path) -> pd.DataFrame:
    """Bring a file of the first schema to the current columns (in memory)."""
    folder = str(Path(path).parent)
    if folder not in _LEGACY_WARNED:
        _LEGACY_WARNED.add(folder)
        log.warning(
            "%s holds run files of the first schema (no protocol, identity or calibration "
            "columns); read with protocol 'unrecorded'. Rerun them (force=true) to record "
            "what they lack.",
            folder,
        )
    frame = frame.copy()
    settings = [json.loads(s) if s else {} for s in frame.pop("method_config")]
    frame["protocol"] = "unrecorded"
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    memory = frame["metric"] == "peak_memory_gib"
    frame["phase"] = frame["dataset"].where(memory, None)
    frame["dataset"] = frame["dataset"].where(~memory, None)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    keys = sorted({k for s in settings for k in s})
    extra = {f"{METHOD_PREFIX}{k}": [_column_value(s.get(k)) for s in settings] for k in keys}
    return pd.concat([frame[COLUMNS], pd.DataFrame(extra, index=frame.index)], axis=1)


def members_dir(results_dir: str | Path, experiment: str) -> Path:
    return Path(results_dir) / "experiments" / experiment


def add_members(results_dir: str | Path, experiment: str, hashes: list[str]) -> None:
    """Record that the runs ``hashes`` belong to ``experiment`` (one empty file each).

    A finished configuration is never rerun, so one run can serve several experiments (the
    alpha = 1.5 point of an ablation is a Table 1 point); membership, not the experiment
    name stored in the run's rows, says which experiments a run belongs to.
    """
    folder = members_dir(results_dir, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    for h in hashes:
        (folder / h).touch()


def members(results_dir: str | Path) -> dict[str, set[str]]:
    """``{config_hash: {experiment, ...}}`` from the membership files under ``results_dir``."""
    out: dict[str, set[str]] = {}
    root = Path(results_dir) / "experiments"
    if root.is_dir():
        for folder in root.iterdir():
            for marker in folder.iterdir() if folder.is_dir() else []:
                out.setdefault(marker.name, set()).add(folder.name)
    return out
