"""Contract suite: every adapter gives the same view of its tiny model."""

from __future__ import annotations

import pytest
import torch

from twossp.adapters import (
    SUPPORTED_MODEL_TYPES,
    UnsupportedArchitectureError,
    adapter_class,
    get_adapter,
)
from twossp.forward import capture_block_inputs, logits_from_hidden, run_blocks


def test_supported_families(family):
    assert family in SUPPORTED_MODEL_TYPES


def test_unsupported_model_type_lists_supported():
    with pytest.raises(UnsupportedArchitectureError, match="supported: .*llama.*phi3"):
        adapter_class("gpt_neox")


def test_unreadable_hub_id_fails_clearly(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    from twossp.modeling import ModelNotFoundError, ModelSpec, check_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: patch the constant too
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set.*local copy"):
        check_model(ModelSpec("twossp-tests/no-such-model"))


def test_saved_model_of_unsupported_family_fails_before_loading(tmp_path):
    from transformers import GPT2Config

    from twossp.modeling import ModelSpec, check_model

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        check_model(ModelSpec(str(tmp_path)))


def test_structure(model):
    a = get_adapter(model)
    assert a.num_blocks == model.config.num_hidden_layers == 4
    for i in range(a.num_blocks):
        assert a.has_attention(i) and a.has_mlp(i)
        assert a.ffn_width(i) == model.config.intermediate_size
        attn, mlp = a.submodule_params(i)
        assert attn > 0 and mlp > 0
    # Block parameters against the config's shapes (one block counted by hand).
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attn, mlp = a.submodule_params(0)
    qkvo = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    biases = (0, c.hidden_size + 2 * kv, 2 * c.hidden_size + 2 * kv)  # none, q/k/v, all
    qk_norms = (0, c.hidden_size + kv)  # OLMo 2 normalises queries and keys
    assert any(attn - qkvo - n in biases for n in qk_norms)
    gated = 3 * c.hidden_size * c.intermediate_size
    plain = 2 * c.hidden_size * c.intermediate_size + c.intermediate_size + c.hidden_size
    assert mlp in (gated, plain)
    inside = (a.attn_name + ".", a.mlp_name + ".")
    norms = sum(
        p.numel()
        for n, p in a.blocks[0].named_parameters()
        if "norm" in n and not n.startswith(inside)
    )
    assert a.block_params() == a.num_blocks * (attn + mlp + norms)


def test_block_runner_matches_model_forward(model):
    a = get_adapter(model)
    ids = torch.randint(3, 128, (1, 24))
    hidden, kwargs = capture_block_inputs(a, ids)
    logits = logits_from_hidden(a, run_blocks(a, hidden, kwargs))
    assert torch.equal(logits, model(input_ids=ids).logits)


def test_ffn_out_proj_sees_intermediate_activation(model):
    a = get_adapter(model)
    seen = {}
    h = a.ffn_out_proj(0).register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model(input_ids=torch.randint(3, 128, (1, 8)))
    h.remove()
    assert seen["x"].shape[-1] == a.ffn_width(0)
