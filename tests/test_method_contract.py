"""The contract every registered pruning method keeps, on the tiny models of every family.

Parametrised over the registry (:func:`twossp.methods.method_names`), so a new method is
tested here without any list being edited: ``plan`` leaves the model untouched; ``prune``
returns the plan ``plan`` makes and, where the plan replays, equals replaying it; the same
seed gives the same plan; the achieved sparsity keeps the budget rule of each protocol; an
unreachable sparsity fails in ``check``, before any forward; the saved folder reloads to
identical logits (stock transformers and :func:`twossp.modeling.load_model`).

Each method runs at its defaults plus :data:`QUICK` (cost only: a method not named there runs
at its defaults) plus the protocol's settings from ``conf/protocol_method/``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from twossp import sparsity as sp
from twossp.adapters import get_adapter
from twossp.methods import PruneContext, build_method, method_class, method_names
from twossp.modeling import ModelSpec, load_model, save_pruned
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan
from twossp.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = sorted(p.stem for p in (ROOT / "conf" / "protocol").glob("*.yaml"))
METHODS = method_names()
PRUNING = method_names(pruning_only=True)

# Cost only, not behaviour: EvoPress's defaults search for minutes; these take well under a
# second on the 4-block tiny models, as do every other method's defaults.
QUICK = {
    "twossp": dict(n_calib_stage1=4),
    "evopress": dict(offspring=4, initially_generated=4, tokens=(16, 32), initial_tokens=16),
}
SPARSITY = 0.375
CALIB = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(0))
IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run 10-30x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def protocol_settings(protocol: str, name: str) -> dict:
    """What ``conf/protocol_method/<protocol>_<name>.yaml`` changes (nothing when absent)."""
    path = ROOT / "conf" / "protocol_method" / f"{protocol}_{name}.yaml"
    if not path.exists():
        return {}
    settings = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    settings.pop("defaults", None)
    return settings


def quick(name: str, protocol: str = "paper", **settings):
    """Method ``name`` at its defaults, :data:`QUICK`'s cost settings and ``protocol``'s."""
    return build_method(
        name, **{**QUICK.get(name, {}), **protocol_settings(protocol, name)}, **settings
    )


def _ctx(s: float = SPARSITY, seed: int = 0) -> PruneContext:
    return PruneContext(s, CALIB, seed=seed, progress=False)


def _checked(name: str, model, s: float = SPARSITY, protocol: str = "paper"):
    """The method, after ``check``; a family the method refuses by name is skipped."""
    method = quick(name, protocol)
    try:
        method.check(model, s)
    except sp.UnreachableSparsityError:
        raise
    except ValueError as err:  # an architecture the method refuses (SliceGPT on phi)
        pytest.skip(str(err))
    return method


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", METHODS)
def test_plan_leaves_the_model_untouched_and_prune_replays_it(name, family):
    model = tiny_model(family)
    method = _checked(name, model)
    structure = [type(m) for m in model.modules()]
    before = _state(model)
    plan = method.plan(model, _ctx())
    after = model.state_dict()
    assert [type(m) for m in model.modules()] == structure
    assert after.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in after.items())

    reference = copy.deepcopy(model)
    assert method.prune(model, _ctx()).to_json() == plan.to_json()
    logits = model(input_ids=IDS).logits
    assert torch.isfinite(logits).all()
    if method_class(name).plan_replays:
        replayed = apply_plan(reference, PrunePlan.from_json(plan.to_json()))
        assert torch.equal(replayed(input_ids=IDS).logits, logits)
    prompt = IDS[:1, :6]
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    cached = model.generate(prompt, use_cache=True, **kw)
    assert cached.shape[1] > prompt.shape[1]
    assert torch.equal(cached, model.generate(prompt, use_cache=False, **kw))


@pytest.mark.parametrize("name", METHODS)
def test_the_same_seed_gives_the_same_plan(name):
    model = tiny_model("qwen2", n_blocks=6)
    method = _checked(name, model)
    first = method.plan(model, _ctx(seed=3)).to_json()
    assert quick(name).plan(model, _ctx(seed=3)).to_json() == first


def _allowed_gap(protocol: str, n_blocks: int) -> float:
    """How far from the target the protocol's budget rules may land, as a fraction of the
    decoder-block parameters. ``paper``: the authors' budgets round to a whole block's worth
    (ceil(s * N) blocks, BlockPruner's alternation) or to a unit finer than a block (2SSP's
    neurons, SliceGPT's embedding dimensions), so within one block. ``matched``: every method
    rounds the same block-parameter budget to the nearest point it can reach, so within half
    of its largest unit, at most half a block."""
    return {"paper": 1 / n_blocks, "matched": 0.5 / n_blocks}[protocol]


@pytest.mark.parametrize("s", [0.25, 0.375, 0.5])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", METHODS)
def test_achieved_sparsity_keeps_the_protocols_budget_rule(name, protocol, s):
    model = tiny_model("qwen2", n_blocks=6)
    method = _checked(name, model, s, protocol)
    before = sp.count(model)
    plan = method.prune(model, _ctx(s))
    achieved = sp.measure(before, sp.count(model))
    if not method_class(name).uses_sparsity:  # dense: the reference, nothing removed
        assert achieved == 0
        return
    assert abs(achieved - s) <= _allowed_gap(protocol, 6) + 1e-9
    for key in ("achieved_sparsity", "predicted_sparsity"):  # what the plan says it removed
        if key in plan.info:
            assert achieved == pytest.approx(plan.info[key], abs=1e-12)


class _ForwardRan(AssertionError):
    pass


@pytest.mark.parametrize("name", PRUNING)
def test_an_unreachable_sparsity_fails_before_any_forward(name):
    model = tiny_model("llama")

    def trap(*_):
        raise _ForwardRan(f"{name}.check ran a forward")

    handles = [m.register_forward_pre_hook(trap) for m in model.modules()]
    try:
        with pytest.raises(sp.UnreachableSparsityError, match="0.9999"):
            quick(name).check(model, 0.9999)
    finally:
        for h in handles:
            h.remove()


def _is_stock_architecture(model) -> bool:
    from baselines.slicegpt.modules import is_rotated

    a = get_adapter(model)
    blocks = range(a.num_blocks)
    return (
        all(a.has_attention(i) and a.has_mlp(i) for i in blocks)
        and len({a.ffn_width(i) for i in blocks}) == 1
        and not is_rotated(a)
    )


def _custom(folder) -> bool:
    return "auto_map" in json.loads((folder / "config.json").read_text())


def _greedy(model, n=4):
    return model.generate(IDS[:1, :5], max_new_tokens=n, do_sample=False)


@pytest.mark.parametrize("name", PRUNING)
def test_the_saved_folder_reloads_to_identical_logits(name, family, tmp_path):
    model = tiny_model(family)
    _checked(name, model).prune(model, _ctx())
    save_pruned(model, tmp_path, max_shard_size="200KB")  # several shards
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert (tmp_path / "generation_config.json").exists()
    stock = _is_stock_architecture(model)
    assert _custom(tmp_path) == (not stock)  # custom code only where stock cannot hold it
    if stock:
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
        assert type(loaded) is type(model)
    else:
        with pytest.raises(ValueError, match="trust_remote_code"):
            AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    loaded.eval()
    torch.testing.assert_close(
        loaded(input_ids=IDS).logits, model(input_ids=IDS).logits, rtol=0, atol=1e-5
    )
    assert torch.equal(_greedy(loaded), _greedy(model))
    ours, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert [type(m) for m in ours.modules()] == [type(m) for m in model.modules()]
    assert torch.equal(ours(input_ids=IDS).logits, model(input_ids=IDS).logits)


def test_protocol_files_name_registered_methods():
    """``conf/protocol_method/<protocol>_<method>.yaml`` for a method or protocol that does not
    exist would be skipped silently by the ``optional`` default of conf/config.yaml."""
    for path in (ROOT / "conf" / "protocol_method").glob("*.yaml"):
        protocol, _, name = path.stem.partition("_")
        assert protocol in PROTOCOLS and name in METHODS, path.name
        assert set(protocol_settings(protocol, name)) <= {
            f.name for f in dataclasses.fields(method_class(name))
        }, path.name
