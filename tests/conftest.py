"""Shared fixtures: tiny models of every family and the real assets in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from twossp.testing import FAMILIES, tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWOSSP_SHARED", ROOT.parent / "shared")).resolve()
ASSETS = SHARED / "assets"
STORIES = ASSETS / "models" / "stories260K"
TEXT = ASSETS / "text"
TASKS = ASSETS / "tasks"


def _share_cores_between_workers() -> None:
    """Under pytest-xdist each worker gets its share of the cores, and so do the
    subprocesses it starts: torch's default (every core per process) would oversubscribe
    them many times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_cores_between_workers()


def needs_shared():
    return pytest.mark.skipif(
        not STORIES.exists(),
        reason=f"real assets not found at {ASSETS} (set TWOSSP_SHARED or clone beside ../shared)",
    )


def compose_config(*overrides: str, hydra_cfg: bool = False):
    """The composed Hydra config of ``overrides``, as the command line would compose it."""
    from hydra import compose, initialize_config_dir

    from twossp.config import register_method_schemas, register_resolvers

    register_resolvers()
    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg
        )


def run_spec(*overrides: str, device_hint: str | None = None):
    """The typed RunSpec of ``overrides`` (what ``experiments/run.py`` would run)."""
    from twossp.config import to_run_spec

    return to_run_spec(compose_config(*overrides), device_hint)


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def model(family):
    return tiny_model(family)


@pytest.fixture
def calib() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 128, (4, 32), generator=g)


@pytest.fixture(scope="session")
def stories_path() -> Path:
    if not STORIES.exists():
        pytest.skip(f"real assets not found at {ASSETS}")
    return STORIES
