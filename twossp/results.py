"""Tidy result rows with a fixed parquet schema: one file per run, written atomically.

Each row is one (run, metric, dataset) value plus everything needed to place it: config
hash, git sha, library versions, model, method, target and achieved sparsity, parameter
counts and pruning time. Analysis merges the per-run files; W&B only mirrors them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twossp.io import atomic_write

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("config_hash", pa.string()),
        ("experiment", pa.string()),
        ("git_sha", pa.string()),
        ("versions", pa.string()),
        ("model", pa.string()),
        ("model_path", pa.string()),
        ("method", pa.string()),
        ("method_config", pa.string()),
        ("target_sparsity", pa.float64()),
        ("achieved_sparsity", pa.float64()),
        ("params_before", pa.int64()),
        ("params_after", pa.int64()),
        ("block_params_before", pa.int64()),
        ("block_params_after", pa.int64()),
        ("prune_seconds", pa.float64()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("dataset", pa.string()),
        ("value", pa.float64()),
        ("variant", pa.string()),
        ("created_at", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
_PACKAGES = ("torch", "transformers", "datasets", "lm_eval", "twossp")


@dataclass
class RunRecord:
    """Facts shared by every row of one run."""

    run_id: str
    config_hash: str
    experiment: str
    model: str
    model_path: str
    method: str
    method_config: dict
    target_sparsity: float
    achieved_sparsity: float
    params_before: int
    params_after: int
    block_params_before: int
    block_params_after: int
    prune_seconds: float
    seed: int
    git_sha: str = field(default_factory=lambda: git_sha())
    versions: dict = field(default_factory=lambda: library_versions())


@dataclass
class Metric:
    metric: str
    dataset: str
    value: float
    variant: dict = field(default_factory=dict)


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


def library_versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def to_frame(record: RunRecord, metrics: list[Metric]) -> pd.DataFrame:
    base = asdict(record)
    base["method_config"] = json.dumps(base["method_config"], sort_keys=True)
    base["versions"] = json.dumps(base["versions"], sort_keys=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [
        {**base, **asdict(m), "variant": json.dumps(m.variant, sort_keys=True), "created_at": now}
        for m in metrics
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def run_path(results_dir: str | Path, config_hash_: str) -> Path:
    return Path(results_dir) / "runs" / f"{config_hash_}.parquet"


def plan_path(results_dir: str | Path, config_hash_: str) -> Path:
    return Path(results_dir) / "plans" / f"{config_hash_}.json"


def reuse_path(results_dir: str | Path, reuse_key: str) -> Path:
    """Names the config hash whose finished rows serve every run with ``reuse_key``."""
    return Path(results_dir) / "reuse" / f"{reuse_key}.txt"


def write_run(frame: pd.DataFrame, path: Path) -> Path:
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


def read_runs(results_dir: str | Path) -> pd.DataFrame:
    """Every finished run's rows under ``results_dir``, in one frame."""
    files = sorted((Path(results_dir) / "runs").glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat([read_run(f) for f in files], ignore_index=True)


def read_run(path: str | Path) -> pd.DataFrame:
    """One run file. It is opened once: pyarrow opening a path twice (footer, then pages)
    could pair two versions of a file that a concurrent job replaces in between."""
    with open(path, "rb") as f:
        return pd.read_parquet(f)
