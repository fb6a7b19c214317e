"""Parquet rows: typed schema, atomic writes, round trip, stable hashes, old and bad files."""

from __future__ import annotations

import json
import os
import stat

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twossp.plan import PrunePlan
from twossp.results import (
    COLUMNS,
    SCHEMA,
    CorruptRunError,
    Metric,
    RunRecord,
    config_hash,
    method_settings,
    read_run,
    read_runs,
    run_path,
    to_frame,
    write_run,
)


def _record(h="abc", method="twossp", params=None):
    return RunRecord(
        run_id="r1",
        config_hash=h,
        experiment="t",
        model="tiny",
        model_path="/x",
        method=method,
        method_params={"alpha": 1.5, "survivors": (2, 1)} if params is None else params,
        target_sparsity=0.375,
        achieved_sparsity=0.3755,
        params_before=100,
        params_after=60,
        block_params_before=80,
        block_params_after=50,
        prune_seconds=1.5,
        seed=0,
        protocol="matched",
        dtype="float32",
        device="cpu",
        calib={"dataset": "c4_train", "n_samples": 32, "seqlen": 512, "seed": 1, "windows": 8},
    )


def test_round_trip_keeps_types(tmp_path):
    metrics = [Metric("ppl", "wikitext2", 12.5, {"seqlen": 512}), Metric("ppl", "c4", 20.0)]
    path = write_run(to_frame(_record(), metrics), run_path(tmp_path, "abc"))
    schema = pq.read_schema(path)
    for f in SCHEMA:
        assert schema.field(f.name).type == f.type, f.name
    assert schema.field("method.alpha").type == pa.float64()
    assert schema.field("method.survivors").type == pa.list_(pa.int64())
    back = read_runs(tmp_path)
    assert len(back) == 2 and back.loc[0, "value"] == 12.5
    assert back.loc[0, "protocol"] == "matched" and back.loc[0, "calib_seed"] == 1
    assert back.loc[0, "calib_windows"] == 8 and back.loc[0, "dtype"] == "float32"
    assert isinstance(back.loc[0, "created_at"], pd.Timestamp)
    assert str(back["created_at"].dt.tz) == "UTC"
    assert json.loads(back.loc[0, "variant"]) == {"seqlen": 512}
    assert method_settings(back.iloc[0]) == {"alpha": 1.5, "survivors": [2, 1]}
    assert {"torch", "transformers"} <= set(back.loc[0, "versions"])
    assert not list((tmp_path / "runs").glob(".*tmp"))


def test_memory_rows_have_a_phase_not_a_dataset(tmp_path):
    frame = to_frame(_record(), [Metric("peak_memory_gib", None, 1.5, phase="prune")])
    write_run(frame, run_path(tmp_path, "m"))
    row = read_runs(tmp_path).iloc[0]
    assert row["phase"] == "prune" and pd.isna(row["dataset"])


def test_runs_of_different_methods_merge(tmp_path):
    write_run(to_frame(_record("a"), [Metric("ppl", "c4", 1.0)]), run_path(tmp_path, "a"))
    other = _record("b", "shortgpt", {"n_calib": None, "last_token": True})
    write_run(to_frame(other, [Metric("ppl", "c4", 2.0)]), run_path(tmp_path, "b"))
    merged = read_runs(tmp_path)
    assert set(merged["method.last_token"].dropna()) == {True}
    assert merged.set_index("config_hash").loc["a", "method.last_token"] is None
    write_run(merged, tmp_path / "merged.parquet")  # mixed columns write back
    assert len(read_run(tmp_path / "merged.parquet")) == 2


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_run(to_frame(_record(), [Metric("ppl", "c4", 1.0)]), tmp_path / "x.parquet")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_corrupt_files_are_named_and_skipped(tmp_path):
    good = write_run(to_frame(_record(), [Metric("ppl", "c4", 1.0)]), run_path(tmp_path, "ok"))
    bad = run_path(tmp_path, "bad")
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptRunError, match="bad.parquet"):
        read_run(bad)
    skipped = []
    assert len(read_runs(tmp_path, skipped)) == 1 and skipped == [bad]


def test_first_schema_files_are_upgraded(tmp_path):
    legacy = pd.DataFrame(
        {
            "run_id": ["r", "r"],
            "config_hash": ["h", "h"],
            "experiment": ["e", "e"],
            "git_sha": ["g", "g"],
            "versions": ['{"torch": "2"}'] * 2,
            "model": ["m", "m"],
            "model_path": ["/m", "/m"],
            "method": ["twossp", "twossp"],
            "method_config": ['{"alpha": 2.0}'] * 2,
            "target_sparsity": [0.5, 0.5],
            "achieved_sparsity": [0.5, 0.5],
            "params_before": [2, 2],
            "params_after": [1, 1],
            "block_params_before": [2, 2],
            "block_params_after": [1, 1],
            "prune_seconds": [0.1, 0.1],
            "seed": [0, 0],
            "metric": ["ppl", "peak_memory_gib"],
            "dataset": ["c4", "eval"],
            "value": [3.0, 1.0],
            "variant": ["{}", "{}"],
            "created_at": ["2026-01-01T00:00:00+00:00"] * 2,
        }
    )
    path = run_path(tmp_path, "h")
    path.parent.mkdir(parents=True)
    legacy.to_parquet(path)
    back = read_run(path)
    assert back.loc[0, "protocol"] == "unrecorded" and back.loc[0, "method.alpha"] == 2.0
    assert back.loc[1, "phase"] == "eval" and pd.isna(back.loc[1, "dataset"])
    assert back.loc[0, "versions"] == {"torch": "2"}
    assert set(COLUMNS) <= set(back.columns)


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_plan_json_round_trip(tmp_path):
    plan = PrunePlan(ffn_keep={0: [1, 2]}, attention=[3], info={"n_attn": 1})
    plan.save(tmp_path / "p.json")
    assert PrunePlan.load(tmp_path / "p.json") == plan
