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


def needs_shared():
    return pytest.mark.skipif(
        not STORIES.exists(),
        reason=f"real assets not found at {ASSETS} (set TWOSSP_SHARED or clone beside ../shared)",
    )


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
