"""Config composition and the Hydra -> typed-arguments boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.run import register_resolvers, to_run_spec
from twossp.methods import METHODS, UnknownMethodError, build_method

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_composes_to_a_run_spec():
    spec = to_run_spec(_compose())
    assert spec.method == "twossp" and spec.sparsity == 0.375
    assert spec.method_params == {
        "alpha": 1.5,
        "n_calib_stage2": 1,
        "n_attn": None,
        "use_cache": True,
    }
    assert [d.name for d in spec.eval.datasets] == ["wikitext2", "c4", "ptb"]
    assert spec.calib.n_samples == 32 and spec.calib.seqlen == 2048


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_config_composes(model):
    spec = to_run_spec(_compose(f"model={model}"))
    assert spec.model_key == model


def test_every_method_yaml_matches_the_registry():
    yamls = {p.stem for p in (CONF / "method").glob("*.yaml")}
    assert yamls == set(METHODS)
    for name in yamls:
        spec = to_run_spec(_compose(f"method={name}"))
        assert spec.method == name
        build_method(spec.method, **spec.method_params)  # settings match the dataclass


def test_hash_changes_with_what_matters_only():
    base = to_run_spec(_compose()).config_hash
    assert to_run_spec(_compose("sparsity=0.5")).config_hash != base
    assert to_run_spec(_compose("method.alpha=2.0")).config_hash != base
    assert to_run_spec(_compose("progress=false", "force=true")).config_hash == base
    assert to_run_spec(_compose("paths.results_dir=/tmp/elsewhere")).config_hash == base


def test_unknown_method_suggests():
    with pytest.raises(UnknownMethodError, match="Did you mean twossp"):
        build_method("twosp")
    with pytest.raises(ValueError, match="no setting 'alpah'.*alpha"):
        build_method("twossp", alpah=1.0)


def test_reuse_key_only_for_sparsity_free_methods():
    def key(*o):
        return to_run_spec(_compose(*o)).reuse_key

    assert key("method=twossp") is None
    dense = key("method=dense", "sparsity=0.25")
    assert dense and dense == key("method=dense", "sparsity=0.5", "calib.n_samples=4")
    assert dense != key("method=dense", "eval.seqlen=1024")
    assert dense != key("method=dense", "model=llama2_7b")
