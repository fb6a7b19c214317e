"""Gated-MLP decoders with separate projections: Llama, Mistral, Qwen2.

Block: ``h + attn(input_layernorm(h))`` then ``h + mlp(post_attention_layernorm(h))`` with
``mlp(x) = down_proj(act(gate_proj(x)) * up_proj(x))``.
"""

from __future__ import annotations

import torch
from torch import nn

from twossp.adapters.base import ModelAdapter, slice_linear


class LlamaAdapter(ModelAdapter):
    model_types = ("llama", "mistral", "qwen2")
    tiny_configs = {
        "llama": {"num_key_value_heads": 2},
        "mistral": {"num_key_value_heads": 2, "sliding_window": None},
        "qwen2": {"num_key_value_heads": 2},
    }
    supports_rotation = True

    def ffn_out_proj(self, i: int) -> nn.Linear:
        return self.mlp(i).down_proj

    def keep_ffn_neurons(self, i: int, keep: torch.Tensor) -> None:
        mlp = self.mlp(i)
        slice_linear(mlp.gate_proj, keep, dim=0)
        slice_linear(mlp.up_proj, keep, dim=0)
        slice_linear(mlp.down_proj, keep, dim=1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(keep.numel())

    def residual_readers(self, i: int) -> tuple[list[nn.Linear], list[nn.Linear]]:
        attn, mlp = self.attention(i), self.mlp(i)
        return [attn.q_proj, attn.k_proj, attn.v_proj], [mlp.gate_proj, mlp.up_proj]

    def residual_writers(self, i: int) -> tuple[nn.Linear, nn.Linear]:
        return self.attention(i).o_proj, self.mlp(i).down_proj
