"""OLMo 2: a gated MLP and post-norms only.

Block: ``h + post_attention_layernorm(attn(h))`` then
``h + post_feedforward_layernorm(mlp(h))`` with ``mlp(x) = down_proj(act(gate_proj(x)) *
up_proj(x))``; the attention normalises its queries and keys (``q_norm`` / ``k_norm``, inside
the attention). A submodule's post-norm goes with it (the post-norm of a submodule that outputs
zeros outputs zeros). Not rotatable: with no norm between the residual stream and the
submodules' inputs, and norms between their outputs and the stream, SliceGPT's norm folding
does not hold (SliceGPT refuses ``olmo2`` by name).
"""

from __future__ import annotations

from twossp.adapters.llama import LlamaAdapter


class Olmo2Adapter(LlamaAdapter):
    model_types = ("olmo2",)
    # Post-norms only, query / key norms inside the attention.
    tiny_configs = {"olmo2": {"num_key_value_heads": 2, "pad_token_id": 0}}
    attn_norm_names = ("post_attention_layernorm",)
    mlp_norm_names = ("post_feedforward_layernorm",)
    supports_rotation = False
