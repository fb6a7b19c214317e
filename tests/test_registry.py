"""The method registry: names registered next to their classes, one order whatever imports
first, and the ``${methods:...}`` sweep values the experiment grids read from it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from twossp.methods import METHODS, PruningMethod, method_class, method_names, register
from twossp.methods import registry as reg

ROOT = Path(__file__).resolve().parents[1]
# The published methods in the published order (the paper's Table 1): grids sweep them so
# and tables list them so; methods added later follow them.
PUBLISHED = ["dense", "twossp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt"]
ORDER = method_names()


def test_the_registry_lists_every_method_in_the_published_order():
    assert ORDER[: len(PUBLISHED)] == PUBLISHED and list(METHODS) == ORDER
    assert method_names(pruning_only=True) == [n for n in ORDER if n != "dense"]
    assert all(method_class(name).name == name for name in ORDER)


def test_the_order_does_not_depend_on_what_was_imported_first():
    code = (
        "import baselines.slicegpt.modules, baselines.evopress; "
        "from twossp.methods import method_names; print(','.join(method_names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.split() == [",".join(ORDER)]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for tests that register throwaway methods."""
    monkeypatch.setattr(reg, "_REGISTERED", dict(reg._REGISTERED))


def test_a_method_registered_elsewhere_comes_last(scratch_registry):
    @register("probe")
    @dataclass
    class Probe(PruningMethod):
        def plan(self, model, ctx):
            raise NotImplementedError

    assert Probe.name == "probe" and method_names()[-1] == "probe"
    assert method_names()[:-1] == ORDER


def test_register_refuses_a_taken_name_a_bad_name_and_a_non_method(scratch_registry):
    @dataclass
    class Other(PruningMethod):
        def plan(self, model, ctx):
            raise NotImplementedError

    with pytest.raises(ValueError, match="'shortgpt' is taken by baselines.shortgpt.ShortGPT"):
        register("shortgpt")(Other)
    with pytest.raises(ValueError, match="identifier"):
        register("short-gpt")
    with pytest.raises(TypeError, match="PruningMethod subclass"):
        register("thing")(dict)
    assert "thing" not in METHODS and method_names() == ORDER


def test_the_grids_read_the_method_list_from_the_registry():
    import hydra_plugins.twossp_sweeper  # noqa: F401  (Hydra imports it at start-up)

    node = OmegaConf.create({"all": "${methods:all}", "pruning": "${methods:pruning}"})
    assert node.all == ",".join(ORDER) and node.pruning == ",".join(ORDER[1:])
    with pytest.raises(Exception, match="choose one of all, pruning"):
        OmegaConf.to_container(OmegaConf.create({"x": "${methods:dense}"}), resolve=True)
