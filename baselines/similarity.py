"""Hidden states at block boundaries and their similarity, for ShortGPT and the window method,
and the base class of both (whole blocks, ``k`` of them, chosen from those states).

State ``j`` of a sample is the input of block ``j``; state ``N`` is the output of the last
block (before the final norm). States are produced one sample and one block at a time, so
memory stays at a few hidden states whatever the depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from twossp.adapters import ModelAdapter, get_adapter
from twossp.devices import input_device
from twossp.forward import capture_block_inputs, run_blocks
from twossp.methods.base import PruneContext, PruningMethod, clip_windows, select_samples
from twossp.sparsity import blocks_for_sparsity, validate_sparsity


@torch.no_grad()
def iter_block_states(adapter: ModelAdapter, input_ids: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield states ``0..N`` of ``input_ids`` (``[1, seqlen]``), each ``[1, seqlen, hidden]``."""
    device = input_device(adapter.model)
    hidden, kwargs = capture_block_inputs(adapter, input_ids.to(device))
    yield hidden
    for i in range(adapter.num_blocks):
        hidden = run_blocks(adapter, hidden, kwargs, i, i + 1)
        yield hidden


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the hidden dimension, per token, in float32, clamped to [-1, 1].

    ``b`` is moved to ``a``'s device (blocks may sit on different devices).
    """
    return F.cosine_similarity(a.float(), b.to(a.device).float(), dim=-1).clamp(-1.0, 1.0)


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``arccos(cos(a, b)) / pi`` per token, in [0, 1]."""
    return torch.arccos(token_cosine(a, b)) / torch.pi


@dataclass
class BlockSimilarityMethod(PruningMethod):
    """Drops ``k`` whole blocks chosen from the first ``n_calib`` calibration samples (all of
    them when ``None``); subclasses say which blocks.

    ``k = ceil(s * N)`` with ``rounding="up"`` (the 2SSP authors' policy, ``protocol=paper``)
    or the nearest whole number of blocks with ``rounding="nearest"`` (``protocol=matched``).
    """

    n_calib: int | None = None
    rounding: str = "up"

    def check(self, model: nn.Module, sparsity: float) -> None:
        if self.n_calib is not None and self.n_calib < 1:
            raise ValueError(f"n_calib must be >= 1 or None, got {self.n_calib}")
        self.n_blocks(model, sparsity)

    def n_blocks(self, model: nn.Module, sparsity: float) -> int:
        """How many blocks this method removes from ``model`` at ``sparsity``."""
        n = get_adapter(model).num_blocks
        return blocks_for_sparsity(validate_sparsity(sparsity), n, self.rounding)

    def calibration_windows(self) -> int | None:
        return self.n_calib

    def reading(self, n_windows: int) -> BlockSimilarityMethod:
        return replace(self, n_calib=clip_windows(self.n_calib, n_windows))

    def setup(self, model: nn.Module, ctx: PruneContext) -> tuple[ModelAdapter, int, torch.Tensor]:
        """The adapter, the number of blocks to drop and the calibration samples to use."""
        self.check(model, ctx.sparsity)
        samples = select_samples(ctx.calibration, self.n_calib, self.name)
        return get_adapter(model), self.n_blocks(model, ctx.sparsity), samples
