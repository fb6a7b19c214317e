"""A run that prunes exactly as a finished run replays that run's plan (twossp.reuse)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import needs_shared, run_spec
from twossp.pipeline import run
from twossp.plan import PrunePlan
from twossp.results import plan_path, read_run, read_runs
from twossp.reuse import find_plan, pruning_key

pytestmark = needs_shared()


def _spec(tmp_path, *overrides):
    return run_spec(
        f"paths.results_dir={tmp_path}",
        "calib.n_samples=8",
        "progress=false",
        "method=twossp",
        "sparsity=0.375",
        *overrides,
    )


def _windows(rows, dataset):
    return json.loads(rows[rows.dataset == dataset].iloc[0].variant)["window_nll"]


def test_other_evaluation_replays_the_plan_and_scores_the_same_model(tmp_path):
    first = run(_spec(tmp_path, "eval.max_windows=4", "eval.window_sample=first"))
    spec = _spec(tmp_path, "eval.max_windows=6", "eval.window_sample=first")
    assert spec.config_hash != first.path.stem
    second = run(spec)
    row = read_run(second.path).iloc[0]
    source = read_run(first.path).iloc[0]
    assert row.plan_from == first.path.stem and pd.isna(source.plan_from)
    assert row.prune_seconds == source.prune_seconds
    assert source.started_at < source.created_at and row.started_at < row.created_at
    assert row.params_after == source.params_after
    assert PrunePlan.load(plan_path(tmp_path, spec.config_hash)) == PrunePlan.load(
        plan_path(tmp_path, first.path.stem)
    )
    # the replayed model is the pruned one: the first 4 windows score as in the first run
    rows, before = read_run(second.path), read_run(first.path)
    assert _windows(rows, "wikitext2")[:4] == pytest.approx(_windows(before, "wikitext2"))
    # force prunes afresh, and the method's own pruning gives that same model
    forced = run(_spec(tmp_path, "eval.max_windows=6", "eval.window_sample=first", "force=true"))
    again = read_run(forced.path)
    assert pd.isna(again.iloc[0].plan_from)
    assert _windows(again, "wikitext2") == pytest.approx(_windows(rows, "wikitext2"))


def test_different_pruning_is_not_replayed(tmp_path):
    run(_spec(tmp_path, "eval.max_windows=2"))
    other_sparsity = run(_spec(tmp_path, "eval.max_windows=3", "sparsity=0.5"))
    other_draw = run(_spec(tmp_path, "eval.max_windows=3", "calib.seed=1"))
    rows = read_runs(tmp_path)
    for out in (other_sparsity, other_draw):
        assert rows[rows.config_hash == out.path.stem].plan_from.isna().all()


def test_slicegpt_plans_are_never_replayed(tmp_path):
    run(_spec(tmp_path, "method=slicegpt", "eval.max_windows=2"))
    out = run(_spec(tmp_path, "method=slicegpt", "eval.max_windows=3"))
    assert read_run(out.path).plan_from.isna().all()


def test_key_reads_runs_recorded_with_a_machine_path(tmp_path):
    out = run(_spec(tmp_path, "eval.max_windows=2"))
    row = read_run(out.path).iloc[0].to_dict()
    name, _ = row["calib_source"].removeprefix("local:").split("@")
    spec = _spec(tmp_path)
    older = dict(row, calib_source=f"local:{spec.calib.dataset.local_path}")
    assert name == spec.calib.dataset.local_path.rsplit("/", 1)[-1]
    assert pruning_key(older) == pruning_key(row)
    assert pruning_key(dict(row, seed=1)) != pruning_key(row)
    found = find_plan(tmp_path, pruning_key(older))
    assert found is not None and found.config_hash == out.path.stem
    assert find_plan(tmp_path, pruning_key(older), exclude=out.path.stem) is None
