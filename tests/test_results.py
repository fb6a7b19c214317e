"""Parquet rows: fixed schema, atomic writes, round trip, stable hashes."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq

from twossp.plan import PrunePlan
from twossp.results import (
    COLUMNS,
    SCHEMA,
    Metric,
    RunRecord,
    config_hash,
    read_runs,
    run_path,
    to_frame,
    write_run,
)


def _record(h="abc"):
    return RunRecord(
        run_id="r1",
        config_hash=h,
        experiment="t",
        model="tiny",
        model_path="/x",
        method="twossp",
        method_config={"alpha": 1.5},
        target_sparsity=0.375,
        achieved_sparsity=0.3755,
        params_before=100,
        params_after=60,
        block_params_before=80,
        block_params_after=50,
        prune_seconds=1.5,
        seed=0,
    )


def test_round_trip(tmp_path):
    metrics = [Metric("ppl", "wikitext2", 12.5, {"seqlen": 512}), Metric("ppl", "c4", 20.0)]
    frame = to_frame(_record(), metrics)
    path = write_run(frame, run_path(tmp_path, "abc"))
    assert pq.read_schema(path).equals(SCHEMA, check_metadata=False)
    back = read_runs(tmp_path)
    assert list(back.columns) == COLUMNS
    assert len(back) == 2
    assert back.loc[0, "value"] == 12.5
    assert json.loads(back.loc[0, "variant"]) == {"seqlen": 512}
    assert json.loads(back.loc[0, "method_config"]) == {"alpha": 1.5}
    assert set(json.loads(back.loc[0, "versions"])) >= {"torch", "transformers"}
    assert not list((tmp_path / "runs").glob(".*tmp"))


def test_read_runs_empty(tmp_path):
    assert read_runs(tmp_path).empty


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_plan_json_round_trip(tmp_path):
    plan = PrunePlan(ffn_keep={0: [1, 2]}, attention=[3], info={"n_attn": 1})
    plan.save(tmp_path / "p.json")
    assert PrunePlan.load(tmp_path / "p.json") == plan


def test_frame_types():
    frame = to_frame(_record(), [Metric("ppl", "ptb", 3.0)])
    assert isinstance(frame, pd.DataFrame) and frame.shape == (1, len(COLUMNS))
