"""Sliding-window block removal (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the
Deeper Layers"; arXiv 2403.17887).

To remove ``n`` blocks, compute for every start ``l`` the angular distance between the input of
block ``l`` and the output of block ``l + n - 1`` (the input of block ``l + n``)::

    d(l, n) = mean_{samples} arccos(cos(x_l, x_{l+n})) / pi

on the last token of each calibration sample, and remove blocks ``l*..l*+n-1`` with
``l* = argmin_l d(l, n)``. No healing (the paper's optional QLoRA step is not run), as in the
2SSP comparison.

Deviations:
(1) ``n`` follows the harness's block rounding policy, ``n = ceil(s * N)``
    (:func:`twossp.sparsity.blocks_for_sparsity`, as in the 2SSP authors' code).
(2) Calibration text is the run's calibration set (C4 train windows, as in the 2SSP
    comparison; the paper uses C4 validation). ``n_calib`` takes the first samples of it;
    ``None`` (default) takes all. The 2SSP authors' comparison uses 256 windows of 2048 tokens,
    so a faithful rerun sets ``calib.n_samples=256``.
(3) The 2SSP authors' code compares block *outputs* only, so a window can never start at
    block 0, and it ranks windows by mean cosine (ties to the later window). Here every start
    ``0..N-n`` is considered, windows are ranked by mean angular distance as in the paper, and
    ties go to the earlier window.
(4) ``last_token=False`` averages the per-token angular distance over every token of every
    sample instead (not in the paper; an ablation switch). Cosines are computed in float32 and
    clamped to [-1, 1] before ``arccos``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from baselines.similarity import BlockSimilarityMethod, angular_distance, iter_block_states
from twossp.adapters import ModelAdapter
from twossp.methods.base import PruneContext
from twossp.plan import PrunePlan

log = logging.getLogger(__name__)


@torch.no_grad()
def window_distances(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    n: int,
    last_token: bool = True,
    progress: bool = True,
) -> list[float]:
    """``d(l, n)`` for every start ``l`` in ``0..N-n``: mean angular distance of the input of
    block ``l`` to the output of block ``l + n - 1``.

    Args:
        adapter: the model.
        samples: ``[n_samples, seqlen]`` token ids, run one at a time.
        n: window length in blocks, ``1 <= n <= N``.
        last_token: compare the last token of each sample only (the paper); otherwise average
            over every token.
        progress: show a progress bar over samples.
    """
    if not 1 <= n <= adapter.num_blocks:
        raise ValueError(f"window length must be in 1..{adapter.num_blocks}, got {n}")
    sums = torch.zeros(adapter.num_blocks - n + 1, dtype=torch.float64)
    count = 0
    for sample in tqdm(samples, desc="window distances", disable=not progress, leave=False):
        recent: deque[torch.Tensor] = deque(maxlen=n + 1)
        for j, state in enumerate(iter_block_states(adapter, sample[None])):
            recent.append(state[:, -1] if last_token else state)
            if j >= n:
                sums[j - n] += angular_distance(recent[0], recent[-1]).double().sum().cpu()
        count += 1 if last_token else sample.numel()
    return (sums / count).tolist()


@dataclass
class SlidingWindow(BlockSimilarityMethod):
    """Remove the contiguous blocks whose input and output are the most alike.

    Attributes:
        n_calib: calibration samples used (the first ones); None uses all that are given.
        last_token: compare the last token of each sample (paper); False averages all tokens.
    """

    name = "window"
    last_token: bool = True

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        adapter, n, samples = self.setup(model, ctx)
        dist = window_distances(adapter, samples, n, self.last_token, ctx.progress)
        start = min(range(len(dist)), key=lambda s: (dist[s], s))
        drop = list(range(start, start + n))
        log.info(
            "window: removing blocks %d..%d of %d (angular distance %.4f)",
            start,
            start + n - 1,
            adapter.num_blocks,
            dist[start],
        )
        info = {
            "n_blocks_removed": n,
            "start": start,
            "distances": dist,
            "n_calib": len(samples),
            "last_token": self.last_token,
        }
        return PrunePlan(blocks=drop, info=info)
