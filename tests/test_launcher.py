"""Sweeps through Hydra's submitit launcher, and atomic result files under concurrency."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import needs_shared
from twossp.config import register_method_schemas, register_resolvers
from twossp.results import COLUMNS, read_runs, write_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_launcher_configs_compose(launcher, monkeypatch):
    monkeypatch.setenv("TWOSSP_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("TWOSSP_SLURM_MEM_GB", "128")
    register_resolvers()
    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    conf = cfg.hydra.launcher
    assert conf._target_.endswith("LocalLauncher" if launcher == "local" else "SlurmLauncher")
    assert isinstance(conf.timeout_min, int) and conf.tasks_per_node == 1
    if launcher == "slurm":
        assert conf.partition == "gpu-a100" and conf.mem_gb == 128 and conf.gpus_per_node == 1
        assert conf.account is None


def _sweep(tmp_path: Path, methods: str = "dense,twossp") -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "-m",
        "hydra/launcher=local",
        f"method={methods}",
        "sparsity=0.375",
        f"paths.results_dir={tmp_path / 'res'}",
        f"paths.output_dir={tmp_path / 'out'}",
        "eval.use=[ptb]",
        "eval.max_windows=2",
        "calib.n_samples=4",
        "progress=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def _logs(tmp_path: Path) -> set[Path]:
    return set((tmp_path / "out").rglob(".submitit/*/*_log.out"))


@needs_shared()
@pytest.mark.slow
def test_local_launcher_sweep_launches_only_what_is_left_and_merges(tmp_path):
    first = _sweep(tmp_path, "dense")
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(_logs(tmp_path)) == 1  # the point ran as its own submitit job

    before = _logs(tmp_path)
    second = _sweep(tmp_path, "dense,twossp")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(_logs(tmp_path) - before) == 1  # twossp only: dense finished in the first sweep
    assert "method=dense" in second.stdout and "finished earlier, not launched" in second.stdout
    rows = read_runs(tmp_path / "res")
    assert rows.config_hash.nunique() == 2 and rows.run_id.nunique() == 2
    assert sorted(rows.method.unique()) == ["dense", "twossp"]
    assert len(rows) == 2 and not rows.duplicated(["config_hash", "metric", "dataset"]).any()
    assert (rows.value > 1).all()
    files = sorted(p.name for p in (tmp_path / "res" / "runs").iterdir())
    assert files == sorted(f"{h}.parquet" for h in rows.config_hash)  # no temp files left

    before = _logs(tmp_path)
    third = _sweep(tmp_path, "dense,twossp")
    assert third.returncode == 0, third.stderr[-3000:]
    assert _logs(tmp_path) == before  # a resubmitted sweep submits nothing that finished
    assert third.stdout.count("finished earlier, not launched") == 2
    assert sorted(read_runs(tmp_path / "res").run_id) == sorted(rows.run_id)


def _frame(n: int, tag: str) -> pd.DataFrame:
    row = {c: None for c in COLUMNS}
    row.update(
        run_id=tag,
        config_hash="same",
        value=1.0,
        target_sparsity=0.0,
        achieved_sparsity=0.0,
        prune_seconds=0.0,
        params_before=1,
        params_after=1,
        block_params_before=1,
        block_params_after=1,
        seed=0,
    )
    return pd.DataFrame([{**row, "metric": f"m{i}"} for i in range(n)], columns=COLUMNS)


def _writer(path: str, n: int, rounds: int) -> None:
    frame = _frame(n, f"writer{n}")
    for _ in range(rounds):
        write_run(frame, Path(path))


def test_concurrent_writes_of_one_run_file_are_atomic(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    path = tmp_path / "runs" / "same.parquet"
    write_run(_frame(1, "writer1"), path)
    ctx = multiprocessing.get_context("fork")
    sizes = (1, 50, 400)
    procs = [ctx.Process(target=_writer, args=(str(path), n, 40)) for n in sizes]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs) or reads == 0:
        frame = read_runs(tmp_path)  # a whole file every time, never a mix of two
        assert len(frame) in sizes and frame.run_id.nunique() == 1
        assert frame.run_id.iloc[0] == f"writer{len(frame)}"
        reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert [p.name for p in path.parent.iterdir()] == ["same.parquet"]
    assert len(read_runs(tmp_path)) in sizes
