"""Phi-3: Llama layout with fused ``qkv_proj`` and fused ``gate_up_proj``.

``gate_up_proj`` stacks the gate rows on top of the up rows, so keeping neuron ``j`` keeps row
``j`` and row ``width + j``.
"""

from __future__ import annotations

import torch
from torch import nn

from twossp.adapters.base import ModelAdapter, slice_linear


class Phi3Adapter(ModelAdapter):
    model_types = ("phi3",)
    tiny_configs = {"phi3": {"num_key_value_heads": 4, "pad_token_id": 0}}
    supports_rotation = True

    def ffn_out_proj(self, i: int) -> nn.Linear:
        return self.mlp(i).down_proj

    def keep_ffn_neurons(self, i: int, keep: torch.Tensor) -> None:
        mlp = self.mlp(i)
        width = self.ffn_width(i)
        slice_linear(mlp.gate_up_proj, torch.cat([keep, keep + width]), dim=0)
        slice_linear(mlp.down_proj, keep, dim=1)

    def residual_readers(self, i: int) -> tuple[list[nn.Linear], list[nn.Linear]]:
        return [self.attention(i).qkv_proj], [self.mlp(i).gate_up_proj]

    def residual_writers(self, i: int) -> tuple[nn.Linear, nn.Linear]:
        return self.attention(i).o_proj, self.mlp(i).down_proj
