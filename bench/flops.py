"""FLOPs of one forward pass of a (pruned) model, for the bench's ideal-versus-measured
comparisons (``bench/sections.py``, ``bench/smollm2.py``).

Counts are read through the adapter, so they hold for every method's output (blocks whose
attention or MLP was removed, narrower FFNs, SliceGPT's rotated blocks with their shortcut
linears, removed blocks): ``2 * tokens * in * out`` for every ``nn.Linear`` (the LM head
included: logits are computed at every position), plus the attention core of each block
that still has attention, ``QK^T`` and ``AV``: ``2 * 2 * batch * heads * head_dim * L(L+1)/2``
with causal masking (kernels that skip masked tiles do about that much work). Norms,
activations, rotary embeddings and softmax are left out; they are a few percent at most.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from twossp.adapters import get_adapter


@dataclass
class FlopCount:
    """Multiply-adds counted as two FLOPs, of one forward pass over ``batch x seqlen`` tokens."""

    linear: float
    attention: float
    head: float
    batch: int
    seqlen: int

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.head


def _linear_macs(module: nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def _attention_width(adapter, i: int) -> int:
    """``heads * head_dim`` of block ``i``'s attention (what ``QK^T`` and ``AV`` contract)."""
    attn = adapter.attention(i)
    config = adapter.config
    head_dim = getattr(attn, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = getattr(attn, "num_heads", None) or config.num_attention_heads
    return int(heads) * int(head_dim)


def forward_flops(model: nn.Module, batch: int, seqlen: int, causal: bool = True) -> FlopCount:
    """FLOPs of ``model(input_ids)`` on a ``[batch, seqlen]`` input (see the module notes)."""
    adapter = get_adapter(model)
    tokens = batch * seqlen
    pairs = seqlen * (seqlen + 1) / 2 if causal else seqlen * seqlen
    linear = attention = 0.0
    for i in range(adapter.num_blocks):
        linear += 2.0 * tokens * _linear_macs(adapter.blocks[i])
        if adapter.has_attention(i):
            attention += 2 * 2.0 * batch * pairs * _attention_width(adapter, i)
    head = 2.0 * tokens * _linear_macs(adapter.lm_head)
    return FlopCount(linear=linear, attention=attention, head=head, batch=batch, seqlen=seqlen)
