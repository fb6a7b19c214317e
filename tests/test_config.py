"""Config composition and the Hydra -> typed-arguments boundary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import compose_config
from twossp.config import to_run_spec
from twossp.methods import METHODS, UnknownMethodError, build_method, method_class

CONF = Path(__file__).resolve().parents[1] / "conf"


_compose = compose_config


def test_default_composes_to_a_run_spec():
    spec = to_run_spec(_compose())
    assert spec.method == "twossp" and spec.sparsity == 0.375 and spec.protocol == "paper"
    assert spec.method_params == {
        "alpha": 1.5,
        "n_calib_stage1": 32,
        "n_calib_stage2": 1,
        "score_seqlen": None,
        "n_attn": None,
        "use_cache": True,
    }
    assert [d.name for d in spec.eval.datasets] == ["wikitext2", "c4", "ptb"]
    assert spec.calib.n_samples == 256 and spec.calib.seqlen == 2048
    assert spec.calib.packing == "stream" and spec.calib.seed == 0


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_config_composes(model):
    spec = to_run_spec(_compose(f"model={model}"))
    assert spec.model_key == model


def test_every_method_yaml_matches_the_registry():
    yamls = {p.stem for p in (CONF / "method").glob("*.yaml")}
    assert yamls == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_defaults_come_from_the_dataclass(name):
    """The YAML holds only what differs; what Hydra composes is the dataclass's defaults."""
    spec = to_run_spec(_compose(f"method={name}", "model=llama2_7b"))
    built = build_method(spec.method, **spec.method_params)
    default = method_class(name)()
    differs = {
        f.name
        for f in dataclasses.fields(default)
        if getattr(built, f.name) != getattr(default, f.name)
    }
    assert differs == ({"pool_seqlen"} if name == "evopress" else set())
    if name == "evopress":  # the authors' window for a Llama model, from conf/model
        assert built.pool_seqlen == 4096


def test_a_setting_of_the_wrong_type_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose("method=twossp", "method.alpha=abc")


def test_hash_changes_with_what_matters_only():
    base = to_run_spec(_compose()).config_hash
    assert to_run_spec(_compose("sparsity=0.5")).config_hash != base
    assert to_run_spec(_compose("method.alpha=2.0")).config_hash != base
    assert to_run_spec(_compose("protocol=matched")).config_hash != base
    assert to_run_spec(_compose("progress=false", "force=true")).config_hash == base
    assert to_run_spec(_compose("paths.results_dir=/tmp/elsewhere")).config_hash == base


def test_unknown_method_suggests():
    with pytest.raises(UnknownMethodError, match="Did you mean twossp"):
        build_method("twosp")
    with pytest.raises(ValueError, match="no setting 'alpah'.*alpha"):
        build_method("twossp", alpah=1.0)


def test_dense_hash_ignores_sparsity_and_calibration():
    def digest(*o):
        return to_run_spec(_compose("method=dense", *o)).config_hash

    assert digest("sparsity=0.25") == digest("sparsity=0.5", "calib.n_samples=4")
    assert digest() != digest("eval.seqlen=1024")
    assert to_run_spec(_compose("method=twossp", "sparsity=0.25")).config_hash != (
        to_run_spec(_compose("method=twossp", "sparsity=0.5")).config_hash
    )


@pytest.mark.parametrize(
    "method, settings",
    [
        ("shortgpt", {"rounding": "nearest"}),
        ("window", {"rounding": "nearest"}),
        ("evopress", {"rounding": "nearest"}),
        ("blockpruner", {"schedule": "greedy", "rounding": "nearest"}),
        ("slicegpt", {"width": "block_params", "center_embeddings": False}),
        ("twossp", {}),
    ],
)
def test_protocols_differ_only_in_budgets(method, settings):
    paper = to_run_spec(_compose(f"method={method}"))
    matched = to_run_spec(_compose(f"method={method}", "protocol=matched"))
    assert (paper.protocol, matched.protocol) == ("paper", "matched")
    changed = {k: v for k, v in matched.method_params.items() if paper.method_params[k] != v}
    assert changed == settings
    assert paper.calib == matched.calib and paper.eval == matched.eval


def test_command_line_setting_beats_the_protocol():
    spec = to_run_spec(_compose("method=shortgpt", "protocol=matched", "method.rounding=up"))
    assert spec.method_params["rounding"] == "up"


def test_downstream_yaml_says_when_standard_errors_are_reported():
    """conf/eval/downstream.yaml's comment matches what runs do: with bootstrap_iters 0 a
    subsampled evaluation (limit) reports standard errors, a full one does not."""
    spec = to_run_spec(_compose("eval=downstream")).eval.downstream
    assert spec.bootstrap_iters == 0 and spec.limit is None and spec.stderr_iters == 0
    limited = to_run_spec(_compose("eval=downstream", "eval.downstream.limit=10"))
    assert limited.eval.downstream.stderr_iters > 0
    text = (Path(__file__).resolve().parents[1] / "conf/eval/downstream.yaml").read_text()
    assert "standard errors off" not in text and "whenever `limit` subsamples" in text
