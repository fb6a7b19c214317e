"""Phi-1/1.5/2: parallel attention and plain two-layer MLP.

Block: ``h + attn(ln(h)) + mlp(ln(h))`` with one shared ``input_layernorm`` and
``mlp(x) = fc2(act(fc1(x)))``. The shared norm belongs to neither submodule, so it is only
removed with the whole block.
"""

from __future__ import annotations

import torch
from torch import nn

from twossp.adapters.base import ModelAdapter, slice_linear


class PhiAdapter(ModelAdapter):
    model_types = ("phi",)
    tiny_configs = {"phi": {"num_key_value_heads": 4, "partial_rotary_factor": 0.5}}
    attn_norm_names = ()
    mlp_norm_names = ()
    final_norm_name = "final_layernorm"

    def ffn_out_proj(self, i: int) -> nn.Linear:
        return self.mlp(i).fc2

    def keep_ffn_neurons(self, i: int, keep: torch.Tensor) -> None:
        mlp = self.mlp(i)
        slice_linear(mlp.fc1, keep, dim=0)
        slice_linear(mlp.fc2, keep, dim=1)
