"""Calibration NLL of a model with one submodule zeroed, re-running only what changed.

Perplexity-guided greedy searches (2SSP stage 2, BlockPruner) score many candidates that each
differ from the current model in one attention or MLP submodule of block ``i``. Blocks
``0..i-1`` see the same input for every such candidate, so their outputs are cached once per
sample and only blocks ``i..N-1`` are re-run. After a removal is committed, the cached inputs
of the later blocks are refreshed. With ``use_cache=False`` every candidate runs a full
forward pass instead (the reference the tests compare against).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from twossp.adapters import ModelAdapter, ZeroAttention, ZeroMLP
from twossp.devices import input_device
from twossp.forward import (
    block_inputs,
    capture_block_inputs,
    logits_from_hidden,
    nll_sum,
    run_blocks,
)

Kind = Literal["attention", "mlp"]
KINDS: tuple[Kind, ...] = ("attention", "mlp")


def has_submodule(adapter: ModelAdapter, kind: Kind, i: int) -> bool:
    """Whether block ``i`` still has its ``kind`` submodule."""
    return adapter.has_attention(i) if kind == "attention" else adapter.has_mlp(i)


def swap_submodule(adapter: ModelAdapter, kind: Kind, i: int, module):
    """Put ``module`` in place of block ``i``'s ``kind`` submodule; returns the old one."""
    if kind == "attention":
        return adapter.set_attention(i, module)
    if kind == "mlp":
        return adapter.set_mlp(i, module)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def zero_submodule(adapter: ModelAdapter, kind: Kind, i: int):
    """Replace block ``i``'s ``kind`` submodule by one that outputs zeros; returns the old one."""
    return swap_submodule(adapter, kind, i, ZeroAttention() if kind == "attention" else ZeroMLP())


@contextmanager
def zeroed(adapter: ModelAdapter, units: list[tuple[Kind, int]]) -> Iterator[None]:
    """Zero the ``(kind, block)`` submodules for the duration of the block, then restore them."""
    old = [(kind, i, zero_submodule(adapter, kind, i)) for kind, i in units]
    try:
        yield
    finally:
        for kind, i, module in reversed(old):
            swap_submodule(adapter, kind, i, module)


class SubmoduleScorer:
    """Summed calibration NLL of the current model with one submodule zeroed.

    The model is modified only for the duration of one :meth:`nll_without` call. Callers that
    commit a removal (by surgery or by :func:`zero_submodule`) must then call
    :meth:`refresh_from` with the block they changed.

    Args:
        adapter: the model, through its adapter.
        samples: ``[n, seqlen]`` token ids; each sample is run on its own.
        use_cache: re-run only the blocks from the candidate onward, from cached inputs.
    """

    def __init__(self, adapter: ModelAdapter, samples: torch.Tensor, use_cache: bool = True):
        self.adapter, self.use_cache = adapter, use_cache
        device = input_device(adapter.model)
        self.samples = samples.to(device)
        if use_cache:
            captured = [capture_block_inputs(adapter, s[None]) for s in self.samples]
            self.kwargs = [kw for _, kw in captured]
            self.states = [block_inputs(adapter, h, kw) for (h, kw) in captured]

    @torch.no_grad()
    def nll(self, start: int = 0) -> float:
        """Summed NLL of the current model (blocks before ``start`` are taken from the cache)."""
        return sum(self._nll(s, start) for s in range(len(self.samples)))

    @torch.no_grad()
    def nll_without(self, kind: Kind, i: int) -> float:
        """Summed NLL over all samples with block ``i``'s ``kind`` submodule zeroed."""
        with zeroed(self.adapter, [(kind, i)]):
            return self.nll(i)

    def best(
        self,
        candidates: list[tuple[Kind, int]],
        on_scored: Callable[[int, int], None] | None = None,
    ) -> tuple[tuple[Kind, int], float]:
        """The candidate whose removal gives the lowest NLL, and that NLL.

        Non-finite scores rank last; ties go to the earlier candidate. ``on_scored(k, n)`` is
        called after the ``k``-th of ``n`` candidates is scored (progress lines).
        """
        if not candidates:
            raise ValueError("no candidate submodule to score")
        scores = []
        for kind, i in candidates:
            scores.append(self.nll_without(kind, i))
            if on_scored is not None:
                on_scored(len(scores), len(candidates))
        scores = [x if math.isfinite(x) else math.inf for x in scores]
        c = min(range(len(candidates)), key=lambda c: (scores[c], c))
        return candidates[c], scores[c]

    def _nll(self, s: int, start: int) -> float:
        ids = self.samples[s][None]
        if self.use_cache:
            hidden = run_blocks(self.adapter, self.states[s][start], self.kwargs[s], start)
            logits = logits_from_hidden(self.adapter, hidden)
        else:
            logits = self.adapter.model(input_ids=ids, use_cache=False).logits
        return nll_sum(logits, ids)[0]

    @torch.no_grad()
    def refresh_from(self, i: int) -> None:
        """Block ``i`` changed: recompute the cached inputs of every later block."""
        if not self.use_cache:
            return
        for s, states in enumerate(self.states):
            for j in range(i, self.adapter.num_blocks):
                states[j + 1] = run_blocks(self.adapter, states[j], self.kwargs[s], j, j + 1)
