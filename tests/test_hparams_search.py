"""Optuna search over 2SSP's alpha (conf/hparams_search/twossp_alpha_optuna.yaml).

Needs the optional hydra-optuna-sweeper (skipped without it). The sweep is selected with
``hydra/sweeper=optuna`` on the command line as well: conf/config.yaml overrides
hydra/sweeper itself, and Hydra lets the primary config's override win over one in an
appended config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import needs_shared
from twossp.config import register_method_schemas, register_resolvers
from twossp.results import read_runs

ROOT = Path(__file__).resolve().parents[1]
SEARCH = "+hparams_search=twossp_alpha_optuna"
_PLUGIN = "hydra_plugins.hydra_optuna_sweeper"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None or importlib.util.find_spec(_PLUGIN) is None,
    reason="hydra-optuna-sweeper not installed (pip install hydra-optuna-sweeper==1.3.0 "
    "optuna==2.10.1; see the pins in README)",
)


@pytest.fixture(scope="module", autouse=True)
def _sweeper_imports():
    try:
        importlib.import_module(f"{_PLUGIN}.optuna_sweeper")
    except Exception as exc:  # installed but broken (e.g. an optuna / numpy mismatch)
        pytest.skip(f"hydra-optuna-sweeper does not import: {exc!r}")


def test_search_config_composes():
    register_resolvers()
    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=[SEARCH, "hydra/sweeper=optuna"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize" and sweeper.n_trials == 3
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == 0
    assert dict(sweeper.params) == {"method.alpha": "interval(0.5, 3.0)"}
    assert cfg.method.name == "twossp" and cfg.objective == "ppl/wikitext2"


def _alpha(rows):
    if "method.alpha" in rows:  # one column per method setting
        return rows["method.alpha"]
    return rows["method_config"].map(lambda c: json.loads(c)["alpha"])


def _sweep(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "-m",
        SEARCH,
        "hydra/sweeper=optuna",
        "model=stories260k",
        "calib.n_samples=32",
        "calib.seqlen=128",
        "eval.seqlen=128",
        "eval.max_windows=2",
        "eval.use=[wikitext2]",
        "progress=false",
        f"paths.results_dir={tmp_path / 'res'}",
        f"paths.output_dir={tmp_path / 'out'}",
        f"hydra.sweep.dir={tmp_path / name}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_optuna_alpha_sweep_names_the_best_trial(tmp_path):
    first = _sweep(tmp_path, "sweep1")
    assert first.returncode == 0, first.stderr[-3000:]
    files = sorted((tmp_path / "res" / "runs").glob("*.parquet"))
    assert len(files) == 3  # three trials, three configurations

    rows = read_runs(tmp_path / "res")
    assert (rows.method == "twossp").all()
    assert (rows.experiment == "twossp_alpha_optuna").all()
    ppl = rows[(rows.metric == "ppl") & (rows.dataset == "wikitext2")]
    by_alpha = dict(zip(_alpha(ppl).astype(float), ppl.value, strict=True))
    assert len(by_alpha) == 3 and all(0.5 <= a <= 3.0 for a in by_alpha)

    best = yaml.safe_load((tmp_path / "sweep1" / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    alpha = best["best_params"]["method.alpha"]
    assert alpha in by_alpha
    assert best["best_value"] == pytest.approx(by_alpha[alpha])
    assert best["best_value"] == pytest.approx(min(by_alpha.values()))

    # The seeded sampler proposes the same alphas again: every trial is read back from its
    # result file (nothing recomputed) and the study reaches the same answer.
    second = _sweep(tmp_path, "sweep2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped (already done)") == 3
    assert sorted((tmp_path / "res" / "runs").glob("*.parquet")) == files
    again = yaml.safe_load((tmp_path / "sweep2" / "optimization_results.yaml").read_text())
    assert again == best
