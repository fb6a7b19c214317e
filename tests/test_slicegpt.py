"""SliceGPT: fusion and rotation are exact, slicing meets the target, the model stays usable."""

from __future__ import annotations

import copy

import pytest
import torch

from baselines.slicegpt import SliceGPT, fuse_norms, rotation_model_types
from baselines.slicegpt.method import block_costs, sliced_block_params
from baselines.slicegpt.modules import ScaleFreeRMSNorm, ShortcutBlock
from tests.conftest import TEXT
from twossp import sparsity as sp
from twossp.adapters import get_adapter
from twossp.data import CalibrationSpec, TextDataset, calibration_samples, token_stream
from twossp.evaluation.perplexity import perplexity
from twossp.methods import PruneContext
from twossp.modeling import ModelSpec, count_params, load_model, save_pruned
from twossp.sparsity import UnreachableSparsityError
from twossp.testing import tiny_model

FAMILIES = ("llama", "mistral", "qwen2", "phi3")
IDS = torch.randint(3, 128, (2, 20), generator=torch.Generator().manual_seed(1))
CALIB = torch.randint(3, 128, (4, 32), generator=torch.Generator().manual_seed(0))


MATCHED = {"width": "block_params", "center_embeddings": False}  # protocol=matched


def _prune(model, sparsity=0.375, calib=CALIB, **settings):
    method = SliceGPT(**{"round_to": 1, **MATCHED, **settings})
    return method.prune(model, PruneContext(sparsity, calib, seed=0, progress=False))


def _logits(model):
    return model(input_ids=IDS).logits


def test_supported_families_are_the_rotation_adapters():
    assert set(rotation_model_types()) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_norm_fusion_alone_keeps_logits(family):
    model = tiny_model(family, dtype=torch.float64)
    before = _logits(model)
    adapter = get_adapter(model)
    fuse_norms(adapter)
    assert all(isinstance(n, ScaleFreeRMSNorm) for i in range(4) for n in adapter.norms(i))
    assert isinstance(adapter.final_norm, ScaleFreeRMSNorm)
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_rotation_without_slicing_keeps_logits(family):
    model = tiny_model(family, dtype=torch.float64)
    q_before = get_adapter(model).residual_readers(0)[0][0].weight.clone()
    before = _logits(model)
    _prune(model, hidden_dim=64)
    adapter = get_adapter(model)
    assert all(isinstance(b, ShortcutBlock) for b in adapter.blocks)
    assert not torch.allclose(adapter.residual_readers(0)[0][0].weight, q_before)  # it rotated
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=1e-4)


def test_slicing_a_stream_that_lives_in_a_subspace_is_exact():
    """Oracle: if every writer outputs into an r-dim subspace, slicing to r loses nothing."""
    model = tiny_model("llama", dtype=torch.float64)
    adapter = get_adapter(model)
    basis, _ = torch.linalg.qr(
        torch.randn(64, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    project = basis @ basis.T
    with torch.no_grad():
        adapter.embeddings.weight.copy_(adapter.embeddings.weight @ project)
        for i in range(adapter.num_blocks):
            for writer in adapter.residual_writers(i):
                writer.weight.copy_(project @ writer.weight)
    before = _logits(model)
    plan = _prune(model, hidden_dim=40)
    assert adapter.embeddings.weight.shape == (128, 40)
    assert all(e > 1 - 1e-9 for e in plan.info["kept_energy"])
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", [0.25, 0.375, 0.5])
def test_widths_and_sparsity_meet_the_target(family, target):
    model = tiny_model(family)
    before = sp.count(model)
    plan = _prune(model, target)
    achieved = sp.measure(before, sp.count(model))
    dim, adapter = plan.info["hidden_dim"], get_adapter(model)
    assert achieved == pytest.approx(plan.info["predicted_sparsity"], abs=1e-12)
    # Closest width: within half a width step of the target, and within the tolerance.
    fresh = tiny_model(family)
    costs, blocks = block_costs(get_adapter(fresh)), sp.count(fresh).blocks
    step = (
        (
            sliced_block_params(costs, 64, dim + 1, False)
            - sliced_block_params(costs, 64, dim - 1, False)
        )
        / 2
        / blocks
    )
    assert abs(achieved - target) <= step / 2 + 1e-9
    assert abs(achieved - target) <= SliceGPT().tolerance
    assert adapter.embeddings.weight.shape[1] == dim
    for i in range(adapter.num_blocks):
        d_out = 64 if i == adapter.num_blocks - 1 else dim
        attn_readers, mlp_readers = adapter.residual_readers(i)
        attn_writer, mlp_writer = adapter.residual_writers(i)
        assert {r.weight.shape[1] for r in attn_readers + mlp_readers} == {dim}
        assert attn_writer.weight.shape[0] == dim and mlp_writer.weight.shape[0] == d_out
        assert adapter.blocks[i].attn_shortcut.weight.shape == (dim, dim)
        assert adapter.blocks[i].mlp_shortcut.weight.shape == (d_out, dim)
    assert adapter.lm_head.weight.shape[1] == 64


def test_slice_head_slices_the_last_block_and_head():
    model = tiny_model("llama")
    plan = _prune(model, 0.375, slice_head=True)
    adapter, dim = get_adapter(model), plan.info["hidden_dim"]
    assert adapter.lm_head.weight.shape[1] == dim
    assert adapter.residual_writers(3)[1].weight.shape[0] == dim
    assert torch.isfinite(_logits(model)).all()


def test_round_to_is_respected_when_it_meets_the_tolerance():
    model = tiny_model("llama")
    plan = SliceGPT(round_to=8, tolerance=0.2, **MATCHED).prune(
        model, PruneContext(0.375, CALIB, progress=False)
    )
    assert plan.info["hidden_dim"] % 8 == 0


def test_round_to_falls_back_to_the_closest_width(caplog):
    method = SliceGPT(round_to=8, **MATCHED)  # a step of 8 is ~15 % of a 64-wide model
    slicing = method.slicing(tiny_model("llama"), 0.375)
    assert slicing.dim % 8 != 0 and abs(slicing.sparsity - 0.375) <= method.tolerance
    assert "round_to=8" in caplog.text


@pytest.mark.parametrize("family", ["phi", "gemma2", "olmo2"])
def test_unsupported_family_fails_in_check_naming_the_supported(family):
    model = tiny_model(family)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="phi3") as err:
        SliceGPT().check(model, 0.25)
    assert all(t in str(err.value) for t in FAMILIES) and repr(family) in str(err.value)
    with pytest.raises(ValueError, match="supported"):
        _prune(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_bad_targets_and_settings_fail_in_check():
    model = tiny_model("llama")
    with pytest.raises(UnreachableSparsityError):
        SliceGPT(round_to=1, **MATCHED).check(model, 0.99)
    with pytest.raises(ValueError, match="hidden_dim"):
        SliceGPT(hidden_dim=65).check(model, 0.25)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        SliceGPT().check(model, 1.5)
    _prune(model)
    with pytest.raises(ValueError, match="already rotated"):
        SliceGPT().check(model, 0.25)


def test_plan_leaves_the_model_bit_identical():
    model = tiny_model("llama")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    plan = SliceGPT(round_to=1, **MATCHED).plan(model, PruneContext(0.375, CALIB, progress=False))
    assert plan.info["hidden_dim"] < 64
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [type(m) for m in model.modules()] == types


def test_same_seed_same_result():
    a, b = tiny_model("qwen2"), tiny_model("qwen2")
    assert _prune(a).info == _prune(b).info
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_is_smaller_finite_and_generates(family):
    model = tiny_model(family)
    before_total, before_blocks = count_params(model), sp.count(model).blocks
    _prune(model, 0.5)
    assert count_params(model) < before_total and sp.count(model).blocks < before_blocks
    assert torch.isfinite(_logits(model)).all()
    prompt = IDS[:1, :6]
    cached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape[1] == 14 and torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_save_and_load_roundtrip(family, tmp_path):
    model = tiny_model(family)
    _prune(model)
    save_pruned(model, tmp_path)
    loaded, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    assert count_params(loaded) == count_params(model)
    assert torch.equal(_logits(loaded), _logits(model))


@pytest.mark.parametrize("target, dim", [(0.25, 48), (0.375, 40), (0.5, 32)])
def test_paper_width_is_s_of_the_embedding_dimension(target, dim):
    model = tiny_model("llama")
    slicing = SliceGPT().slicing(model, target)  # int((1 - s) * 64), down to a multiple of 8
    assert slicing.dim == dim and slicing.sparsity < target  # the shortcuts cost parameters


def test_centering_embeddings_zeroes_row_means_and_changes_an_rmsnorm_model():
    model = tiny_model("llama", dtype=torch.float64)
    before = _logits(model)
    adapter = get_adapter(model)
    fuse_norms(adapter, center_embeddings=True)
    means = adapter.embeddings.weight.mean(dim=-1)
    assert means.abs().max() < 1e-12
    assert not torch.allclose(_logits(model), before, atol=1e-3)  # the authors' fusion


@pytest.fixture(scope="module")
def stories_calib(stories_path):
    _, tok = load_model(ModelSpec(str(stories_path), device="cpu"))
    c4 = TextDataset("c4", local_path=str(TEXT / "c4_train_1000.jsonl"), split="train")
    text = TextDataset("tinystories", local_path=str(TEXT / "tinystories_sample.txt"), join="\n")
    return calibration_samples(tok, CalibrationSpec(c4, 8, 256, 0)), token_stream(tok, text, 256)[0]


@pytest.mark.parametrize("target", [0.25, 0.375, 0.5])
@pytest.mark.parametrize("protocol", ["paper", "matched"])
def test_stories260k(stories_path, stories_calib, target, protocol, tmp_path):
    model, tok = load_model(ModelSpec(str(stories_path), device="cpu"))
    calib, ids = stories_calib
    before = sp.count(model)
    method = SliceGPT() if protocol == "paper" else SliceGPT(**MATCHED)
    plan = method.prune(model, PruneContext(target, calib, seed=0, progress=False))
    achieved = sp.measure(before, sp.count(model))
    if protocol == "paper":
        assert plan.info["hidden_dim"] == int((1 - target) * 64) // 8 * 8
        assert achieved < target
    else:
        assert plan.info["hidden_dim"] < 64
        assert abs(achieved - target) <= 0.005  # width steps of 1 are ~0.4 % on stories260K
    assert sp.count(model).total < before.total  # despite untying the 512 x 64 head
    ppl = perplexity(model, ids, 256, progress=False).ppl
    assert 1 < ppl < 512  # finite, and better than uniform over the 512-token vocabulary
    save_pruned(model, tmp_path, tok)  # a tied model: the head was untied before rotating
    loaded, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert torch.equal(
        loaded(input_ids=ids[None, :64]).logits, model(input_ids=ids[None, :64]).logits
    )
