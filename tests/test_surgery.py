"""Surgery is exact: it removes structure without changing anything else."""

from __future__ import annotations

import pytest
import torch

from twossp.adapters import ZeroAttention, get_adapter
from twossp.modeling import ModelSpec, count_params, load_model, save_pruned
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan
from twossp.testing import tiny_mixed_window_qwen2, tiny_model

IDS = torch.randint(3, 128, (2, 20), generator=torch.Generator().manual_seed(1))


def test_keep_all_neurons_is_bit_exact(model):
    before = model(input_ids=IDS).logits
    width = get_adapter(model).ffn_width(0)
    apply_plan(model, PrunePlan(ffn_keep={i: list(range(width)) for i in range(4)}))
    assert torch.equal(model(input_ids=IDS).logits, before)


def test_keep_k_equals_zeroing_the_rest(family):
    model = tiny_model(family)
    reference = tiny_model(family)
    a, r = get_adapter(model), get_adapter(reference)
    width = a.ffn_width(1)
    keep = sorted(torch.randperm(width, generator=torch.Generator().manual_seed(2))[:37].tolist())
    drop = sorted(set(range(width)) - set(keep))
    with torch.no_grad():  # zero the dropped neurons' output columns in the reference
        r.ffn_out_proj(1).weight[:, drop] = 0
    apply_plan(model, PrunePlan(ffn_keep={1: keep}))
    assert a.ffn_width(1) == 37
    torch.testing.assert_close(
        model(input_ids=IDS).logits, reference(input_ids=IDS).logits, rtol=1e-5, atol=1e-5
    )


def test_dropped_attention_equals_zero_attention_output(family):
    model, reference = tiny_model(family), tiny_model(family)
    r = get_adapter(reference)
    handle = r.attention(2).register_forward_hook(
        lambda m, args, out: (torch.zeros_like(out[0]), *out[1:])
    )
    n_before = count_params(model)
    apply_plan(model, PrunePlan(attention=[2]))
    assert not get_adapter(model).has_attention(2)
    assert count_params(model) < n_before
    torch.testing.assert_close(model(input_ids=IDS).logits, reference(input_ids=IDS).logits)
    handle.remove()


def test_removed_block_and_config(family):
    model = tiny_model(family)
    apply_plan(model, PrunePlan(blocks=[1], attention=[3], mlp=[3]))
    assert model.config.num_hidden_layers == 2
    assert torch.isfinite(model(input_ids=IDS).logits).all()


def test_generate_with_kv_cache_after_removing_first_attention(family):
    model = tiny_model(family)
    apply_plan(model, PrunePlan(attention=[0, 2], blocks=[1]))
    prompt = IDS[:1, :6]
    cached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


_mixed_window_qwen2 = tiny_mixed_window_qwen2


@pytest.mark.parametrize(
    "plan",
    [
        PrunePlan(attention=[0]),
        PrunePlan(attention=[2]),
        PrunePlan(attention=[0, 2]),
        PrunePlan(attention=[1, 3]),
        PrunePlan(blocks=[0], attention=[2]),
    ],
)
def test_generate_with_mixed_full_and_sliding_attention(plan, tmp_path):
    model = _mixed_window_qwen2()
    apply_plan(model, plan)
    prompt = torch.randint(3, 128, (1, 10), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=8, do_sample=False)
    cached = model.generate(prompt, use_cache=True, **kw)
    assert torch.equal(cached, model.generate(prompt, use_cache=False, **kw))
    save_pruned(model, tmp_path)
    loaded, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert torch.equal(loaded.generate(prompt, use_cache=True, **kw), cached)


def test_save_and_load_roundtrip(tmp_path):
    model = tiny_model("llama")
    width = get_adapter(model).ffn_width(0)
    apply_plan(
        model,
        PrunePlan(
            ffn_keep={i: list(range(0, width, 3)) for i in range(4)}, attention=[1], blocks=[2]
        ),
    )
    save_pruned(model, tmp_path)
    loaded, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert isinstance(get_adapter(loaded).attention(1), ZeroAttention)
    assert count_params(loaded) == count_params(model)
    assert torch.equal(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits)
