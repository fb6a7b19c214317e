"""The modules SliceGPT installs, and how it installs them.

A rotated model keeps its Hugging Face classes except for two small modules, defined in
:mod:`twossp.remote.pruned_modules` (the file pruned checkpoints ship, so that stock
transformers can rebuild them) and re-exported here:

- :class:`ScaleFreeRMSNorm` replaces every RMSNorm once its scale has been folded into the
  linears that read its output. It normalises by the model's *original* width, so slicing the
  residual stream (dropping its smallest principal components) barely changes the result.
- :class:`ShortcutBlock` replaces a decoder block whose residual stream changes basis (and
  width) inside it: ``h = attn_shortcut(h) + attn(attn_norm(h))`` then
  ``h = mlp_shortcut(h) + mlp(mlp_norm(h))``. It adopts the children of the block it replaces
  under their own names, so parameter names and adapter accessors do not change; only
  ``attn_shortcut.weight`` and ``mlp_shortcut.weight`` are new (and are counted as block
  parameters).

Surgery and checkpoints need no SliceGPT-specific code: each of these classes tells the
structure record how to describe and rebuild it (``structure_spec`` / ``from_structure``, the
hook every replacement module of :mod:`twossp.remote.pruned_modules` implements), so
:func:`twossp.surgery.structure_of` records them like any other replaced module. They are
defined in that shipped, torch-only file (a saved folder must rebuild them without this
package) and used from here.

Known limit: Hugging Face records ``output_hidden_states`` with hooks keyed on its decoder
layer class, so a model of :class:`ShortcutBlock` returns no hidden states that way; use
:func:`twossp.forward.block_inputs` instead.
"""

from __future__ import annotations

import torch
from torch import nn

from twossp.adapters.base import ModelAdapter
from twossp.remote.pruned_modules import ScaleFreeRMSNorm, ShortcutBlock

__all__ = [
    "ScaleFreeRMSNorm",
    "ShortcutBlock",
    "install_shortcut_block",
    "is_rotated",
]


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
    names = (
        adapter.attn_name,
        adapter.mlp_name,
        adapter.attn_norm_names[0],
        adapter.mlp_norm_names[0],
    )
    wrapped = ShortcutBlock(block, names, _shortcut(attn_weight), _shortcut(mlp_weight))
    wrapped.train(block.training)
    adapter.blocks[i] = wrapped
    return wrapped


def is_rotated(adapter: ModelAdapter) -> bool:
    """Whether any block carries shortcut rotations or any norm is scale-free."""
    return any(isinstance(m, (ShortcutBlock, ScaleFreeRMSNorm)) for m in adapter.model.modules())
