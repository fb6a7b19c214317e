"""Gemma 2: a gated MLP, sandwich norms and soft-capped logits.

Block: ``h + post_attention_layernorm(attn(input_layernorm(h)))`` then
``h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`` with
``mlp(x) = down_proj(act(gate_proj(x)) * up_proj(x))``; both norms of a submodule go with it
(the post-norm of a submodule that outputs zeros outputs zeros). The model's forward soft-caps
the head's logits, ``cap * tanh(logits / cap)``, which :meth:`finish_logits` repeats for code
that scores from hidden states. Not rotatable: Gemma's RMSNorm scales by ``1 + w`` and the
post-norms sit between the submodules and the residual stream, so SliceGPT's norm folding does
not hold (SliceGPT refuses ``gemma2`` by name).
"""

from __future__ import annotations

import torch

from twossp.adapters.llama import LlamaAdapter


def _head_dim(shared: dict) -> int:
    """A tiny model's head width (Gemma 2's default, 256, is wider than a tiny model)."""
    return shared["hidden_size"] // shared["num_attention_heads"]


class Gemma2Adapter(LlamaAdapter):
    model_types = ("gemma2",)
    # Sandwich norms, soft-capped logits, alternating sliding window (shorter than test prompts).
    tiny_configs = {
        "gemma2": {
            "num_key_value_heads": 2,
            "head_dim": _head_dim,
            "query_pre_attn_scalar": _head_dim,
            "sliding_window": 16,
            "final_logit_softcapping": 5.0,
            "attn_logit_softcapping": 50.0,
            "pad_token_id": 0,
        }
    }
    attn_norm_names = ("input_layernorm", "post_attention_layernorm")
    mlp_norm_names = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
    supports_rotation = False

    def finish_logits(self, logits: torch.Tensor) -> torch.Tensor:
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is None:
            return logits
        return torch.tanh(logits / cap) * cap
