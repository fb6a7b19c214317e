"""Prune once per pruned model: a run whose pruning matches a finished run's replays its plan.

Two configurations that differ only in how the pruned model is evaluated (perplexity on one
run, downstream tasks on another) prune the same model. The second one need not search again:
:func:`find_plan` looks through the finished runs under the results folder for one whose
*pruning* was the same, and the pipeline replays that run's plan (:mod:`twossp.surgery`)
instead of calling the method. An EvoPress search of an hour and a half becomes a second.

The pruning is the same when these recorded facts are equal (:func:`pruning_key`): the model
(weight fingerprint or hub commit), dtype and device kind, protocol, method and every method
setting, target sparsity, seed, and the calibration actually read (corpus and its fingerprint,
windows, window length, draw, packing). They are read back from run files, so runs recorded
before this module existed are found too. Only methods whose plans rebuild their model qualify
(not SliceGPT, whose plan lacks its rotations), and only methods that read calibration (dense
has nothing to reuse). ``force=true`` prunes afresh.

A replayed run records ``plan_from``, the config hash of the run whose plan it replayed, and
that run's ``prune_seconds`` (the time the pruning took; the replay's second is not a pruning
time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from twossp.plan import PrunePlan
from twossp.results import CorruptRunError, method_settings, plan_path, read_run

log = logging.getLogger(__name__)

# The run columns that decide what a method removes (beside its method.* settings).
PRUNING_COLUMNS = (
    "model_fingerprint",
    "model_revision",
    "dtype",
    "device",
    "protocol",
    "method",
    "target_sparsity",
    "seed",
    "calib_dataset",
    "calib_source",
    "calib_n_samples",
    "calib_seqlen",
    "calib_seed",
    "calib_packing",
    "calib_windows",
)


def _plain(value):
    """A recorded value as plain JSON (numpy scalars and arrays, NaN as null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _source(value):
    """A calibration source as runs record it now: runs recorded before sources were named by
    fingerprint hold ``local:<path>``; that file, where it still exists, is fingerprinted."""
    if not isinstance(value, str) or not value.startswith("local:") or "@" in value:
        return value
    path = Path(value.removeprefix("local:")).expanduser()
    if not path.exists():
        return value
    from twossp.model_source import path_fingerprint

    return f"local:{path.name}@{path_fingerprint(path)}"


def pruning_key(row) -> str:
    """What decides a run's pruning, from one of its rows (a mapping of run columns), as a
    string that is equal for two runs exactly when those facts are."""
    facts = {c: _plain(row.get(c)) for c in PRUNING_COLUMNS}
    facts["calib_source"] = _source(facts["calib_source"])
    facts["settings"] = {k: _plain(v) for k, v in method_settings(row).items()}
    return json.dumps(facts, sort_keys=True, default=str)


@dataclass(frozen=True)
class FoundPlan:
    """A finished run's plan that rebuilds the model another run would prune."""

    config_hash: str
    plan: PrunePlan
    prune_seconds: float


def find_plan(results_dir: str | Path, key: str, exclude: str | None = None) -> FoundPlan | None:
    """The plan of a finished run under ``results_dir`` whose :func:`pruning_key` is ``key``
    (not run ``exclude``, the asking run itself), or None. Unreadable files are passed over."""
    for path in sorted((Path(results_dir) / "runs").glob("*.parquet")):
        config_hash = path.stem
        source = plan_path(results_dir, config_hash)
        if config_hash == exclude or not source.is_file():
            continue
        try:
            row = read_run(path).iloc[0]
        except CorruptRunError:
            continue
        if pruning_key(row) != key:
            continue
        try:
            plan = PrunePlan.load(source)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("not replaying %s: its plan does not read back (%s)", source, exc)
            continue
        if plan.replayable:
            return FoundPlan(config_hash, plan, float(row["prune_seconds"]))
    return None
