"""W&B mirror: offline runs in a tmp dir, read back from what W&B wrote to disk."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import needs_shared
from twossp.results import Metric, RunRecord, read_runs, run_path, to_frame
from twossp.tracking import WandbSettings, scalars, tracker_from_config

ROOT = Path(__file__).resolve().parents[1]


def _record(**kw) -> RunRecord:
    base = dict(
        run_id="abc123",
        config_hash="f" * 16,
        experiment="unit",
        model="tiny",
        model_path="/m",
        method="twossp",
        method_params={"alpha": 1.5},
        target_sparsity=0.375,
        achieved_sparsity=0.37,
        params_before=100,
        params_after=63,
        block_params_before=80,
        block_params_after=50,
        prune_seconds=1.25,
        seed=0,
        git_sha="x",
        versions={},
    )
    return RunRecord(**{**base, **kw})


def _frame(record):
    return to_frame(
        record,
        [
            Metric("ppl", "wikitext2", 12.5, {"seqlen": 8}),
            Metric("acc", "arc_easy", 0.3, {"task_version": "1.0"}),
            Metric("acc_norm", "arc_easy", 0.35, {"task_version": "1.0"}),
        ],
    )


def read_wandb_log(path: Path) -> list:
    """Records of a ``run-*.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos = path.read_bytes(), 32768, 7  # 7-byte W&B file header
    records, buf = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def _closed_run(path, timeout: float = 60.0) -> list:
    """The run file's records once W&B's service has written its exit record: on a loaded
    machine it may still be writing when ``run.finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_log(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout} s")
        time.sleep(0.5)


def _summary(records) -> dict:
    """Summary as W&B rebuilds it: later records win. An update names its key either as
    ``key`` or as a one-element ``nested_key``; which records carry which depends on
    timing inside W&B's service, so both spellings are read."""
    out = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        # a logged step carries the same values; under load W&B's service may write the
        # summary only when the run closes, after this file is read, so steps count too
        items = (
            r.history.item if kind == "history" else r.summary.update if kind == "summary" else []
        )
        for i in items:
            key = i.key or ".".join(i.nested_key)
            out[key] = json.loads(i.value_json)
    return out


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def test_offline_run_writes_metrics_config_and_table(offline):
    record = _record()
    frame = _frame(record)
    tracker = tracker_from_config(
        {"name": "wandb", "mode": "offline", "project": "twossp-test", "dir": str(offline)},
        SimpleNamespace(experiment="unit"),
        {"model": {"key": "tiny"}, "sparsity": 0.375},
    )
    tracker.log_run(frame)

    runs = list((offline / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and tracker.run_dir == runs[0]
    records = _closed_run(next(runs[0].glob("run-*.wandb")))
    summary = _summary(records)
    assert summary["ppl/wikitext2"] == 12.5
    assert summary["acc/arc_easy"] == 0.3 and summary["acc_norm/arc_easy"] == 0.35
    assert summary["sparsity/achieved"] == 0.37 and summary["time/prune_seconds"] == 1.25

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert run.run_group == "unit" and run.project == "twossp-test"
    assert run.display_name == "tiny-twossp-s0.375"
    assert config["config_hash"] == "f" * 16 and config["model"] == {"key": "tiny"}

    table = json.loads(next(runs[0].glob("files/media/table/results_*.table.json")).read_text())
    got = {
        (row[table["columns"].index("metric")], row[table["columns"].index("dataset")]): row[
            table["columns"].index("value")
        ]
        for row in table["data"]
    }
    assert got == {
        ("ppl", "wikitext2"): 12.5,
        ("acc", "arc_easy"): 0.3,
        ("acc_norm", "arc_easy"): 0.35,
    }


def test_scalars_are_named_metric_slash_dataset():
    record = _record()
    keys = set(scalars(_frame(record)))
    assert {"ppl/wikitext2", "acc/arc_easy", "acc_norm/arc_easy"} <= keys


def test_bad_mode_and_logger_are_rejected_before_any_run():
    with pytest.raises(ValueError, match="online"):
        WandbSettings(mode="onlne")
    with pytest.raises(ValueError, match="unknown logger 'mlflow'"):
        tracker_from_config({"name": "mlflow"}, SimpleNamespace(experiment="x"))


def test_logger_config_composes_to_a_tracker(offline):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.run import make_tracker
    from twossp.config import register_method_schemas, register_resolvers, to_run_spec

    register_resolvers()

    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=wandb", "experiment_name=sweep1"])
    tracker = make_tracker(cfg, to_run_spec(cfg))
    assert tracker.settings.mode == "offline"  # from WANDB_MODE
    assert tracker.settings.group == "sweep1" and tracker.settings.dir == str(offline)
    assert tracker.config["logger"]["name"] == "wandb"
    assert OmegaConf.is_dict(cfg.logger)


@needs_shared()
def test_pipeline_calls_the_tracker_after_the_parquet_is_written(tmp_path):
    from hydra import compose, initialize_config_dir

    from twossp.config import register_method_schemas, register_resolvers, to_run_spec
    from twossp.pipeline import run

    register_resolvers()

    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "method=dense",
                f"paths.results_dir={tmp_path}",
                "eval.max_windows=1",
                "eval.use=[wikitext2]",
                "progress=false",
            ],
        )
    spec = to_run_spec(cfg)
    seen = []

    class Probe:
        def check(self):
            pass

        def log_run(self, frame):
            ppl_rows = int((frame["metric"] == "ppl").sum())  # (+ peak memory rows on CUDA)
            seen.append((run_path(spec.results_dir, spec.config_hash).exists(), ppl_rows))

    run(spec, tracker=Probe())
    assert seen == [(True, 1)]
    run(spec, tracker=Probe())  # skipped: the finished run is not logged again
    assert seen == [(True, 1)] and len(read_runs(tmp_path)) == 1


@needs_shared()
def test_a_finished_run_never_mirrored_is_mirrored_once_when_skipped(tmp_path):
    """What conf/logger/wandb.yaml says: a skipped run logs nothing, unless it was never
    mirrored (here: it finished without a tracker); then it is mirrored once."""
    from tests.conftest import run_spec
    from twossp.pipeline import run

    spec = run_spec(
        "method=dense", f"paths.results_dir={tmp_path}", "eval.max_windows=1", "eval.use=[ptb]"
    )
    assert run(spec).status == "done"  # no tracker: not mirrored
    seen = []

    class Probe:
        def check(self):
            pass

        def log_run(self, frame):
            seen.append(frame["config_hash"].iloc[0])

    assert run(spec, tracker=Probe()).status == "skipped"
    assert seen == [spec.config_hash]
    assert run(spec, tracker=Probe()).status == "skipped"
    assert seen == [spec.config_hash]  # once
