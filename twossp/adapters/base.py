"""The one place that knows how a Hugging Face decoder is laid out.

Methods see a model only through a :class:`ModelAdapter`: blocks, their attention and MLP
submodules, the FFN projections and the final norm / head. Adding an architecture means one
subclass in a module of :mod:`twossp.adapters` (found there by ``config.model_type``, with its
tiny test config in ``tiny_configs``) and one entry in ``twossp/remote/families.py``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from twossp.remote.pruned_modules import ZeroAttention, ZeroMLP

__all__ = ["ModelAdapter", "ZeroAttention", "ZeroMLP", "slice_linear"]


def slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> None:
    """Keep only the rows (``dim=0``, outputs) or columns (``dim=1``, inputs) in ``keep``."""
    keep = keep.to(linear.weight.device)
    linear.weight = nn.Parameter(
        linear.weight.data.index_select(dim, keep).clone(), requires_grad=False
    )
    if dim == 0:
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.data[keep].clone(), requires_grad=False)
        linear.out_features = int(keep.numel())
    else:
        linear.in_features = int(keep.numel())


class ModelAdapter:
    """Uniform view of a decoder-only causal LM.

    Subclasses set the attribute names of their family and implement the FFN slicing.
    Block indices are positions in the current (possibly already pruned) model.
    """

    # The stock model_types this adapter handles (each a family of twossp/remote/families.py).
    model_types: ClassVar[tuple[str, ...]] = ()
    # model_type -> settings of its tiny test model (twossp.testing.tiny_config) beyond the
    # shared sizes: what makes the family's stock config small and exercise its features. A
    # value may be a function of the shared settings (a size that follows the width).
    tiny_configs: ClassVar[dict[str, dict]] = {}
    attn_name: ClassVar[str] = "self_attn"
    mlp_name: ClassVar[str] = "mlp"
    # Norms that belong to the attention / to the MLP (pre-norms feeding only it, post-norms
    # applied only to its output); they are removed with it. In rotatable families the first
    # one of each is the pre-norm reading the residual stream (what rotation methods fold).
    attn_norm_names: ClassVar[tuple[str, ...]] = ("input_layernorm",)
    mlp_norm_names: ClassVar[tuple[str, ...]] = ("post_attention_layernorm",)
    final_norm_name: ClassVar[str] = "norm"
    # Blocks are sequential pre-RMSNorm (``h += attn(norm(h)); h += mlp(norm(h))``) and
    # ``residual_readers`` / ``residual_writers`` are implemented: rotation methods can run.
    supports_rotation: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model

    # --- structure -------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def decoder(self) -> nn.Module:
        return self.model.model

    @property
    def blocks(self) -> nn.ModuleList:
        return self.decoder.layers

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self.decoder, self.final_norm_name)

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    def finish_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's forward does to the head's output (nothing, for most families;
        Gemma 2 soft-caps). Code scoring from hidden states must apply it."""
        return logits

    def layer_types(self) -> list[str] | None:
        """The config's per-block attention types (full / sliding window), when it lists them."""
        types = getattr(self.config, "layer_types", None)
        return types if isinstance(types, list) and len(types) == self.num_blocks else None

    def layer_type(self, i: int) -> str:
        """Block ``i``'s attention type, which picks its mask (``config.layer_types[i]``)."""
        types = self.layer_types()
        return types[i] if types is not None else "full_attention"

    def attention(self, i: int) -> nn.Module:
        return getattr(self.blocks[i], self.attn_name)

    def mlp(self, i: int) -> nn.Module:
        return getattr(self.blocks[i], self.mlp_name)

    def set_attention(self, i: int, module: nn.Module) -> nn.Module:
        """Swap block ``i``'s attention for ``module``; returns the old one."""
        old = self.attention(i)
        setattr(self.blocks[i], self.attn_name, module)
        return old

    def set_mlp(self, i: int, module: nn.Module) -> nn.Module:
        old = self.mlp(i)
        setattr(self.blocks[i], self.mlp_name, module)
        return old

    def has_attention(self, i: int) -> bool:
        return not isinstance(self.attention(i), ZeroAttention)

    def has_mlp(self, i: int) -> bool:
        return not isinstance(self.mlp(i), ZeroMLP)

    # --- FFN width ---------------------------------------------------------------------
    def ffn_out_proj(self, i: int) -> nn.Linear:
        """The projection whose *input* is the FFN intermediate activation."""
        raise NotImplementedError

    def ffn_width(self, i: int) -> int:
        return self.ffn_out_proj(i).in_features

    def keep_ffn_neurons(self, i: int, keep: torch.Tensor) -> None:
        """Physically keep only the intermediate neurons ``keep`` (sorted) of block ``i``."""
        raise NotImplementedError

    # --- residual stream (rotation methods) ------------------------------------------
    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def residual_readers(self, i: int) -> tuple[list[nn.Linear], list[nn.Linear]]:
        """(attention, MLP) linears reading block ``i``'s residual stream through its norms."""
        raise NotImplementedError(f"{type(self).__name__} does not expose residual readers")

    def residual_writers(self, i: int) -> tuple[nn.Linear, nn.Linear]:
        """(attention, MLP) output projections writing into block ``i``'s residual stream."""
        raise NotImplementedError(f"{type(self).__name__} does not expose residual writers")

    def norm_names(self, kind: str) -> tuple[str, ...]:
        """Attribute names of the norms that go with block submodule ``kind``."""
        return self.attn_norm_names if kind == "attention" else self.mlp_norm_names

    def norms(self, i: int) -> tuple[nn.Module, nn.Module]:
        """(attention, MLP) pre-norms of block ``i`` (the ones reading the residual stream)."""
        block = self.blocks[i]
        return getattr(block, self.attn_norm_names[0]), getattr(block, self.mlp_norm_names[0])

    def set_norms(self, i: int, attn_norm: nn.Module, mlp_norm: nn.Module) -> None:
        setattr(self.blocks[i], self.attn_norm_names[0], attn_norm)
        setattr(self.blocks[i], self.mlp_norm_names[0], mlp_norm)

    def set_final_norm(self, module: nn.Module) -> None:
        setattr(self.decoder, self.final_norm_name, module)

    @property
    def norm_eps(self) -> float:
        return float(self.config.rms_norm_eps)

    def untie_lm_head(self) -> None:
        """Give the head its own copy of tied input embeddings and record that in the config."""
        head, embed = self.lm_head, self.embeddings
        if head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr():
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        self.config.tie_word_embeddings = False
        if hasattr(self.model, "get_expanded_tied_weights_keys"):  # HF's cached tying map
            self.model.all_tied_weights_keys = self.model.get_expanded_tied_weights_keys(
                all_submodels=True
            )

    # --- bookkeeping --------------------------------------------------------------------
    def submodule_params(self, i: int) -> tuple[int, int]:
        """(attention, MLP) parameter counts of block ``i``, submodules only."""
        attn = sum(p.numel() for p in self.attention(i).parameters())
        mlp = sum(p.numel() for p in self.mlp(i).parameters())
        return attn, mlp

    def block_params(self) -> int:
        return sum(p.numel() for p in self.blocks.parameters())
