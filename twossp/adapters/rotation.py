"""Modules that rotation methods (SliceGPT) install, and how a checkpoint records them.

A rotated model keeps its Hugging Face classes except for two small modules:

- :class:`ScaleFreeRMSNorm` replaces every RMSNorm once its scale has been folded into the
  linears that read its output. It normalises by the model's *original* width, so slicing the
  residual stream (dropping its smallest principal components) barely changes the result.
- :class:`ShortcutBlock` replaces a decoder block whose residual stream changes basis (and
  width) inside it: ``h = attn_shortcut(h) + attn(attn_norm(h))`` then
  ``h = mlp_shortcut(h) + mlp(mlp_norm(h))``. It adopts the children of the block it replaces
  under their own names, so parameter names and adapter accessors do not change; only
  ``attn_shortcut.weight`` and ``mlp_shortcut.weight`` are new (and are counted as block
  parameters).

:func:`rotation_structure` / :func:`rebuild_rotation` extend the surgery manifest so that
:func:`twossp.modeling.load_model` can rebuild the skeleton before the weights load.

Known limit: Hugging Face records ``output_hidden_states`` with hooks keyed on its decoder
layer class, so a model of :class:`ShortcutBlock` returns no hidden states that way; use
:func:`twossp.forward.block_inputs` instead.
"""

from __future__ import annotations

import torch
from torch import nn

from twossp.adapters.base import ModelAdapter


class ScaleFreeRMSNorm(nn.Module):
    """RMSNorm without a scale: ``x / sqrt(sum(x**2) / mean_dim + eps)``.

    Args:
        mean_dim: the width the sum of squares is divided by (the model's hidden size, kept
            when the input is sliced narrower).
        eps: the model's RMSNorm epsilon.
    """

    def __init__(self, mean_dim: int, eps: float):
        super().__init__()
        self.mean_dim = int(mean_dim)
        self.eps = float(eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.promote_types(dtype, torch.float32))
        variance = x.pow(2).sum(-1, keepdim=True) / self.mean_dim
        return (x * torch.rsqrt(variance + self.eps)).to(dtype)

    def extra_repr(self) -> str:
        return f"mean_dim={self.mean_dim}, eps={self.eps}"


class ShortcutBlock(nn.Module):
    """A sequential pre-norm decoder block whose residual connections apply linear maps.

    Built from an existing block of an adapter with ``supports_rotation``; the forward is
    the one every such family shares (Llama, Mistral, Qwen2, Phi-3). Phi-3's residual
    dropouts are not applied (they are identities at inference).
    """

    def __init__(
        self,
        block: nn.Module,
        names: tuple[str, str, str, str],
        attn_shortcut: nn.Linear,
        mlp_shortcut: nn.Linear,
    ):
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        for key, value in vars(block).items():  # hidden_size, config, attention_type, ...
            if not key.startswith("_") and key != "training" and not isinstance(value, nn.Module):
                setattr(self, key, value)
        self.attn_name, self.mlp_name, self.attn_norm_name, self.mlp_norm_name = names
        self.attn_shortcut = attn_shortcut
        self.mlp_shortcut = mlp_shortcut

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        x = getattr(self, self.attn_norm_name)(hidden_states)
        out = getattr(self, self.attn_name)(hidden_states=x, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        hidden_states = self.attn_shortcut(hidden_states) + out
        x = getattr(self, self.mlp_norm_name)(hidden_states)
        return self.mlp_shortcut(hidden_states) + getattr(self, self.mlp_name)(x)


def _shortcut(weight: torch.Tensor) -> nn.Linear:
    """A bias-free linear ``x -> x @ weight.T`` holding ``weight`` (``[out, in]``)."""
    out_features, in_features = weight.shape
    linear = nn.Linear(
        in_features, out_features, bias=False, device=weight.device, dtype=weight.dtype
    )
    linear.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    return linear


def install_shortcut_block(
    adapter: ModelAdapter, i: int, attn_weight: torch.Tensor, mlp_weight: torch.Tensor
) -> ShortcutBlock:
    """Replace block ``i`` by a :class:`ShortcutBlock` with the given shortcut weights.

    Args:
        attn_weight: ``[d_mid, d_in]`` weight of the attention residual connection.
        mlp_weight: ``[d_out, d_mid]`` weight of the MLP residual connection.
    """
    if not adapter.supports_rotation:
        raise ValueError(f"{type(adapter).__name__} does not support residual rotation")
    block = adapter.blocks[i]
    device = next(block.parameters()).device
    attn_weight, mlp_weight = attn_weight.to(device), mlp_weight.to(device)
    if isinstance(block, ShortcutBlock):
        block.attn_shortcut = _shortcut(attn_weight)
        block.mlp_shortcut = _shortcut(mlp_weight)
        return block
    names = (adapter.attn_name, adapter.mlp_name, adapter.attn_norm_name, adapter.mlp_norm_name)
    wrapped = ShortcutBlock(block, names, _shortcut(attn_weight), _shortcut(mlp_weight))
    wrapped.train(block.training)
    adapter.blocks[i] = wrapped
    return wrapped


def is_rotated(adapter: ModelAdapter) -> bool:
    """Whether any block carries shortcut rotations or any norm is scale-free."""
    return any(isinstance(m, (ShortcutBlock, ScaleFreeRMSNorm)) for m in adapter.model.modules())


# --- structure manifest -----------------------------------------------------------------


def rotation_structure(adapter: ModelAdapter) -> dict | None:
    """What a rotation method installed, for the checkpoint manifest; None if nothing."""
    blocks = [i for i in range(adapter.num_blocks) if isinstance(adapter.blocks[i], ShortcutBlock)]
    norms = {
        name: [module.mean_dim, module.eps]
        for name, module in adapter.model.named_modules()
        if isinstance(module, ScaleFreeRMSNorm)
    }
    if not blocks and not norms:
        return None
    return {"shortcut_blocks": blocks, "scale_free_norms": norms}


def rebuild_rotation(adapter: ModelAdapter, structure: dict) -> None:
    """Install placeholder shortcut blocks and scale-free norms described by ``structure``.

    Shapes are fixed afterwards from the manifest's ``shapes``; the weights then load.
    """
    reference = next(adapter.model.parameters())
    width = adapter.config.hidden_size
    eye = torch.eye(width, dtype=reference.dtype, device=reference.device)
    for i in structure.get("shortcut_blocks", []):
        install_shortcut_block(adapter, i, eye, eye)
    for name, (mean_dim, eps) in structure.get("scale_free_norms", {}).items():
        adapter.model.set_submodule(name, ScaleFreeRMSNorm(mean_dim, eps))
