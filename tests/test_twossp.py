"""2SSP: balancing arithmetic, stage 1 ranking, stage 2 cache equals the naive loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from twossp import sparsity as sp
from twossp.adapters import get_adapter
from twossp.methods import PruneContext, build_method
from twossp.methods.twossp import balance_sparsity, stage1_ffn_neurons, stage2_attention
from twossp.plan import PrunePlan
from twossp.sparsity import UnreachableSparsityError
from twossp.surgery import apply_plan
from twossp.testing import tiny_model


def test_balancing_matches_the_formula():
    # stories260K-like numbers: N=5, P_attn=12288, P_mlp=33024, blocks=227200, width=172
    b = balance_sparsity(0.375, 5, 12288, 33024, 227200, 172)
    assert b.n_attn == round(5 * 0.375 ** ((33024 / 12288) / 1.5)) == 1
    per_block = round((round(0.375 * 227200) - 12288) / 5)
    assert b.ffn_keep == round(172 * (1 - per_block / 33024)) == 96


@pytest.mark.parametrize("s", [0.1, 0.25, 0.375, 0.5, 0.7])
def test_balancing_lands_on_target(s):
    n, p_attn, width, hidden = 32, 4 * 4096**2, 11008, 4096
    p_mlp = 3 * hidden * width
    p_blocks = n * (p_attn + p_mlp)
    b = balance_sparsity(s, n, p_attn, p_mlp, p_blocks, width)
    removed = b.n_attn * p_attn + n * 3 * hidden * (width - b.ffn_keep)
    assert abs(removed / p_blocks - s) < 0.005


def test_alpha_moves_budget_to_attention():
    args = (0.5, 32, 4 * 4096**2, 3 * 4096 * 11008, 32 * (4 * 4096**2 + 3 * 4096 * 11008), 11008)
    assert balance_sparsity(*args, alpha=3.0).n_attn > balance_sparsity(*args, alpha=1.0).n_attn


def test_unreachable_targets_fail_clearly():
    with pytest.raises(UnreachableSparsityError, match="exceeds the target"):
        balance_sparsity(0.05, 4, 1000, 10, 4040, 8, n_attn=4)
    with pytest.raises(UnreachableSparsityError, match="unreachable|no FFN neuron"):
        balance_sparsity(0.99, 4, 10, 1000, 4040, 8, n_attn=0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        sp.validate_sparsity(1.5)


def test_stage1_keeps_largest_norm_neurons():
    model = tiny_model("llama")
    a = get_adapter(model)
    calib = torch.randint(3, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    keep = stage1_ffn_neurons(a, calib, 10, progress=False)
    acts = []
    h = a.ffn_out_proj(2).register_forward_pre_hook(lambda m, args: acts.append(args[0][0]))
    for s in calib:
        model(input_ids=s[None])
    h.remove()
    score = torch.stack([x.norm(dim=0) for x in acts]).mean(0)
    assert keep[2] == sorted(torch.topk(score, 10).indices.tolist())


def test_stage2_cache_equals_naive(family):
    model = tiny_model(family, n_blocks=6)
    calib = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(3))
    cached, naive = copy.deepcopy(model), copy.deepcopy(model)
    order_c = stage2_attention(get_adapter(cached), calib, 4, use_cache=True, progress=False)
    order_n = stage2_attention(get_adapter(naive), calib, 4, use_cache=False, progress=False)
    assert order_c == order_n
    ids = calib[:1]
    assert torch.equal(cached(input_ids=ids).logits, naive(input_ids=ids).logits)


def test_stage2_first_pick_is_brute_force_best():
    from twossp.forward import nll_sum

    model = tiny_model("qwen2", n_blocks=5)
    calib = torch.randint(3, 128, (1, 24), generator=torch.Generator().manual_seed(4))
    losses = []
    for i in range(5):
        m = copy.deepcopy(model)
        apply_plan(m, PrunePlan(attention=[i]))
        losses.append(nll_sum(m(input_ids=calib).logits, calib)[0])
    order = stage2_attention(get_adapter(model), calib, 1, progress=False)
    assert order == [min(range(5), key=losses.__getitem__)]


@pytest.mark.parametrize("s", [0.25, 0.375, 0.5])
def test_twossp_end_to_end_on_tiny(family, calib, s):
    model = tiny_model(family, n_blocks=8)
    method = build_method("twossp")
    before = sp.count(model)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    plan = method.plan(model, PruneContext(s, calib, progress=False))
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())
    replay = copy.deepcopy(model)
    method.prune(model, PruneContext(s, calib, progress=False))
    apply_plan(replay, plan)
    achieved = sp.measure(before, sp.count(model))
    assert abs(achieved - s) < 0.02
    assert plan.info["n_attn"] == len(plan.attention)
    ids = calib[:1]
    logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    assert torch.equal(replay(input_ids=ids).logits, logits)
    assert not math.isnan(float(logits.sum()))
