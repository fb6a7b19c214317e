"""Fold RMSNorm scales into the linears that read the norms (SliceGPT, Sec. 3.2).

``W @ diag(w) @ x / rms(x)`` equals ``(W * w) @ x / rms(x)``: the scale ``w`` of every norm
moves into the columns of the linears reading its output (attention / MLP inputs, the head),
and the norm becomes a scale-free RMSNorm. After this the residual stream may be rotated by
any orthogonal ``Q``, because ``rms(x @ Q) = rms(x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.slicegpt.modules import ScaleFreeRMSNorm
from twossp.adapters import ModelAdapter


@torch.no_grad()
def scale_inputs(linears: list[nn.Linear], scale: torch.Tensor) -> None:
    """Multiply the input columns of every linear by ``scale`` (in float64)."""
    scale = scale.detach().double()
    for linear in linears:
        weight = linear.weight.data
        linear.weight.data = (weight.double() * scale.to(weight.device)).to(weight.dtype)


@torch.no_grad()
def center_rows(embedding: nn.Embedding) -> None:
    """Subtract each embedding row's mean over the hidden dimension (in float64).

    The SliceGPT authors do this for every model (it is the mean subtraction LayerNorm would
    apply); for an RMSNorm model it changes the function, so it is optional here.
    """
    weight = embedding.weight.data
    w = weight.double()
    embedding.weight.data = (w - w.mean(dim=-1, keepdim=True)).to(weight.dtype)


@torch.no_grad()
def fuse_norms(adapter: ModelAdapter, center_embeddings: bool = False) -> None:
    """Fold every block norm and the final norm into their readers, in place.

    The head is untied from the input embeddings first (the final norm's scale and, later,
    the last rotation apply to the head only). Logits are unchanged up to rounding, unless
    ``center_embeddings`` (:func:`center_rows`, the authors' code) is set.
    """
    adapter.untie_lm_head()
    if center_embeddings:
        center_rows(adapter.embeddings)
    width, eps = adapter.config.hidden_size, adapter.norm_eps
    for i in range(adapter.num_blocks):
        attn_readers, mlp_readers = adapter.residual_readers(i)
        attn_norm, mlp_norm = adapter.norms(i)
        scale_inputs(attn_readers, attn_norm.weight)
        scale_inputs(mlp_readers, mlp_norm.weight)
        adapter.set_norms(i, ScaleFreeRMSNorm(width, eps), ScaleFreeRMSNorm(width, eps))
    scale_inputs([adapter.lm_head], adapter.final_norm.weight)
    adapter.set_final_norm(ScaleFreeRMSNorm(width, eps))
