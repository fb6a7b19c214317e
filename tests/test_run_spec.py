"""Run identity lives in the package: the runner and the sweeper hash runs with the same code,
without importing the entry-point script, and ask the hub once per process."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import run_spec
from twossp import model_source

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules.add(node.module)
    return modules


def test_the_sweeper_hashes_points_without_importing_the_entry_point_script():
    for path in (ROOT / "hydra_plugins").rglob("*.py"):
        scripts = {m for m in _imported_modules(path) if m.split(".")[0] == "experiments"}
        assert not scripts, f"{path.relative_to(ROOT)} imports {scripts}"
    sweeper = ROOT / "hydra_plugins" / "twossp_sweeper" / "resuming_sweeper.py"
    assert "twossp.config" in _imported_modules(sweeper)


def test_the_script_re_exports_nothing():
    # one import path per name: the conversion lives in twossp.config, the spec in run_spec
    text = (ROOT / "experiments" / "run.py").read_text() + (
        ROOT / "twossp" / "pipeline.py"
    ).read_text()
    assert "noqa: F401" not in text


def test_the_conversion_builds_a_spec_of_the_identity_module():
    from twossp.run_spec import RunSpec

    spec = run_spec("model=llama2_7b", "method=dense")
    assert type(spec) is RunSpec and spec.model_key == "llama2_7b"


@pytest.fixture
def hub(monkeypatch):
    """A hub that counts the questions asked of it (nothing cached locally)."""
    import huggingface_hub

    asked = []

    class FakeApi:
        def model_info(self, repo, revision=None):
            asked.append((repo, revision))
            return SimpleNamespace(sha=f"commit-of-{repo}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model_source.hub_commit.cache_clear()
    yield asked
    model_source.hub_commit.cache_clear()


def test_the_hub_commit_is_asked_once_per_repo_and_revision(hub):
    assert model_source.hub_commit("org/a", None) == "commit-of-org/a"
    assert model_source.hub_commit("org/a", None) == "commit-of-org/a"
    model_source.hub_commit("org/a", "v2")
    model_source.hub_commit("org/b", None)
    assert hub == [("org/a", None), ("org/a", "v2"), ("org/b", None)]


def test_hashing_many_points_of_a_hub_model_asks_the_hub_once(hub):
    hashes = {
        run_spec("model=llama2_7b", "method=twossp", f"sparsity={s}").config_hash
        for s in (0.25, 0.375, 0.5)
    }
    assert len(hashes) == 3  # the points differ; the commit was looked up once
    assert hub == [("meta-llama/Llama-2-7b-hf", None)]
