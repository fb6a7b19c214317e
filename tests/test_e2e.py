"""End to end on the real stories260K model and real text (skipped without ../shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import needs_shared, run_spec
from twossp.data import MissingDatasetError
from twossp.evaluation.perplexity import window_index
from twossp.items import items_path, read_items
from twossp.modeling import ModelSpec, count_params, load_model
from twossp.pipeline import prepare, run
from twossp.plan import PrunePlan
from twossp.results import members, plan_path, read_runs
from twossp.surgery import apply_plan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_shared()


def _spec(tmp_path, *overrides):
    return run_spec(
        f"paths.results_dir={tmp_path}",
        "eval.max_windows=8",
        "calib.n_samples=8",
        "progress=false",
        *overrides,
    )


def test_twossp_run_records_everything(tmp_path):
    spec = _spec(tmp_path, "method=twossp", "sparsity=0.375")
    out = run(spec)
    assert out.status == "done"
    rows = read_runs(tmp_path)
    assert sorted(rows.dataset) == ["c4", "ptb", "wikitext2"]
    assert (rows.metric == "ppl").all() and (rows.value > 1).all()
    row = rows.iloc[0]
    assert abs(row.achieved_sparsity - 0.375) < 0.005
    assert row.params_after < row.params_before
    variant = json.loads(row.variant)
    assert variant["seqlen"] == 512 and variant["windows"] == 8  # capped at the context
    plan = PrunePlan.load(plan_path(tmp_path, spec.config_hash))
    assert plan.info["n_attn"] == len(plan.attention) >= 1
    # every scored window kept, spread over the stream, its NLL as in the row
    items = read_items(items_path(tmp_path, spec.config_hash))
    assert (items.kind == "window").all() and len(items) == 3 * 8
    for ds, rows_of in items.groupby("dataset"):
        row = rows[rows.dataset == ds].iloc[0]
        assert rows_of.nll.tolist() == json.loads(row.variant)["window_nll"]
        assert rows_of.unit.tolist() == window_index(
            json.loads(row.variant)["windows_available"], 8
        )
        assert (rows_of.offset == rows_of.unit * 512).all() and (rows_of.tokens == 511).all()
    assert json.loads(row.variant)["window_sample"] == "spread"
    assert run(spec).status == "skipped"


def test_dense_is_computed_once_per_sparsity_sweep(tmp_path):
    first = run(_spec(tmp_path, "method=dense", "sparsity=0.25"))
    second = run(_spec(tmp_path, "method=dense", "sparsity=0.5", "experiment_name=other"))
    assert (first.status, second.status) == ("done", "skipped") and first.path == second.path
    assert members(tmp_path)[first.path.stem] == {"default", "other"}
    rows = read_runs(tmp_path)
    assert rows.config_hash.nunique() == 1 and rows.target_sparsity.eq(0).all()
    # a pruning method depends on the sparsity, and force recomputes
    assert run(_spec(tmp_path, "method=twossp", "sparsity=0.5")).status == "done"
    assert run(_spec(tmp_path, "method=dense", "sparsity=0.375", "force=true")).status == "done"


def test_plan_replay_and_saved_model(tmp_path):
    spec = _spec(tmp_path, "method=twossp", "sparsity=0.5", "save_model=true")
    out = run(spec)
    saved, _ = load_model(ModelSpec(str(spec.save_model_dir)), with_tokenizer=False)
    row = out.frame.iloc[0]
    assert count_params(saved) == row.params_after
    fresh, _ = load_model(spec.model, with_tokenizer=False)
    apply_plan(fresh, out.plan)
    ids = torch.randint(3, 500, (1, 64))
    assert torch.equal(saved(input_ids=ids).logits, fresh(input_ids=ids).logits)


def test_bad_input_fails_before_loading(tmp_path):
    with pytest.raises(MissingDatasetError, match="does not exist"):
        prepare(_spec(tmp_path, "eval.datasets.ptb.local_path=/nonexistent/ptb.txt"))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        prepare(_spec(tmp_path, "sparsity=1.2"))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        prepare(_spec(tmp_path, "eval.use=[]"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(_spec(tmp_path, "model.name_or_path=/nonexistent/model"))


def test_cli_multirun_resumes(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "-m",
        "method=dense,twossp",
        "sparsity=0.25",
        f"paths.results_dir={tmp_path}",
        f"paths.output_dir={tmp_path}/out",
        "eval.max_windows=2",
        "calib.n_samples=4",
        "progress=false",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 2
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert second.stdout.count("finished earlier, not launched") == 2
