"""What each token adds to a model's KV cache: from the structure through the adapter
(:func:`kv_shape`: for every block that still has attention, K and V of ``kv_heads x
head_dim`` elements), and from a real cache object (:func:`cache_bytes`), which
:mod:`twossp.evaluation.inference` compares after generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from twossp.adapters import get_adapter


@dataclass
class KVShape:
    """What each token adds to the KV cache of a model."""

    attention_blocks: list[int]
    blocks: int
    kv_heads: list[int]
    head_dim: list[int]
    element_bytes: int

    @property
    def bytes_per_token(self) -> int:
        return sum(
            2 * h * d * self.element_bytes
            for h, d in zip(self.kv_heads, self.head_dim, strict=True)
        )


def _kv_dims(attn: nn.Module, config) -> tuple[int, int]:
    """(kv heads, head dim) of one attention module, from its own attributes or the config."""
    heads = config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or getattr(config, "head_dim", None)
    head_dim = int(head_dim or config.hidden_size // heads)
    groups = getattr(attn, "num_key_value_groups", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if groups:
        kv_heads = heads // int(groups)
    return int(kv_heads), head_dim


def kv_shape(model: nn.Module) -> KVShape:
    """The KV-cache layout of ``model``: blocks with attention (read through the adapter)."""
    adapter = get_adapter(model)
    present = [i for i in range(adapter.num_blocks) if adapter.has_attention(i)]
    dims = [_kv_dims(adapter.attention(i), adapter.config) for i in present]
    element = next(model.parameters()).element_size()
    return KVShape(present, adapter.num_blocks, [h for h, _ in dims], [d for _, d in dims], element)


def cache_bytes(cache) -> tuple[int, int]:
    """(bytes held by the key and value tensors of ``cache``, cached sequence length).

    The length is the longest key tensor's (a cache's own ``get_seq_length`` reads slot 0,
    which is empty when no remaining attention has slot 0's type).
    """
    total = length = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        tensors = [
            t
            for layer in layers
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
        ]
    else:  # a legacy tuple of (key, value) per layer
        tensors = [t for pair in cache for t in pair]
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            total += t.numel() * t.element_size()
            length = max(length, int(t.shape[-2]))  # [batch, kv heads, tokens, head dim]
    return total, length
