"""Sliding-window block removal (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the
Deeper Layers"; arXiv 2403.17887).

To remove ``n`` blocks, compare for every start ``l`` the input of block ``l`` with the output
of block ``l + n - 1`` (the input of block ``l + n``) on the last token of each calibration
sample, and remove blocks ``l*..l*+n-1`` of the most similar pair. No healing (the paper's
optional QLoRA step is not run), as in the 2SSP comparison.

Defaults follow the 2SSP authors' code (``protocol=paper``): windows ranked by the mean
cosine similarity of the two states (``distance="cosine"``; ties to the later window), and a
window never starts at block 0 (their code compares block *outputs*, so the first state it
sees is block 0's output; ``first_block=False``).

Deviations from the paper:
(1) ``n = ceil(s * N)`` (``rounding="up"``, the authors' policy) or the nearest whole number
    of blocks (``rounding="nearest"``, ``protocol=matched``).
(2) Calibration text is the run's calibration set (C4 train windows, as in the 2SSP
    comparison; the paper uses C4 validation). ``n_calib`` takes the first samples of it;
    ``None`` (default) takes all.
(3) The paper ranks windows by the mean angular distance ``arccos(cos) / pi``
    (``distance="angular"``; ties to the earlier window) and allows every start
    (``first_block=True``). The authors' code also falls back to removing block 1 alone when
    no window has a positive mean cosine; here the best window is always taken.
(4) ``last_token=False`` averages over every token of every sample instead (not in the paper;
    an ablation switch). Cosines are computed in float32 and clamped to [-1, 1].
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from baselines.similarity import (
    BlockSimilarityMethod,
    angular_distance,
    iter_block_states,
    token_cosine,
)
from twossp.adapters import ModelAdapter
from twossp.methods.base import PruneContext
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.progress import track
from twossp.sparsity import UnreachableSparsityError

log = logging.getLogger(__name__)


DISTANCES = ("cosine", "angular")


@torch.no_grad()
def window_scores(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    n: int,
    last_token: bool = True,
    progress: bool = True,
    distance: str = "cosine",
) -> list[float]:
    """For every start ``l`` in ``0..N-n``, the mean (over samples, and tokens when not
    ``last_token``) similarity of the input of block ``l`` to the output of block ``l+n-1``:
    cosine (higher is more alike) or angular distance ``arccos(cos) / pi`` (lower is).

    Args:
        adapter: the model.
        samples: ``[n_samples, seqlen]`` token ids, run one at a time.
        n: window length in blocks, ``1 <= n <= N``.
        last_token: compare the last token of each sample only (the paper); otherwise average
            over every token.
        progress: show a progress bar over samples.
        distance: ``cosine`` or ``angular``.
    """
    if not 1 <= n <= adapter.num_blocks:
        raise ValueError(f"window length must be in 1..{adapter.num_blocks}, got {n}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    score = token_cosine if distance == "cosine" else angular_distance
    sums = torch.zeros(adapter.num_blocks - n + 1, dtype=torch.float64)
    count = 0
    for sample in track(
        samples, desc="window distances", unit="windows", show=progress, logger=log
    ):
        recent: deque[torch.Tensor] = deque(maxlen=n + 1)
        for j, state in enumerate(iter_block_states(adapter, sample[None])):
            recent.append(state[:, -1] if last_token else state)
            if j >= n:
                sums[j - n] += score(recent[0], recent[-1]).double().sum().cpu()
        count += 1 if last_token else sample.numel()
    return (sums / count).tolist()


def best_start(scores: list[float], distance: str, first_block: bool) -> int:
    """The chosen window start: the most similar pair of states among the allowed starts.

    Cosine: the highest score, ties to the later start (the authors' ``>=``); angular: the
    lowest, ties to the earlier start.
    """
    starts = range(0 if first_block else 1, len(scores))
    if not starts:
        raise UnreachableSparsityError(
            "no window can start after block 0 (the window covers every later block)"
        )
    if distance == "cosine":
        return max(starts, key=lambda s: (scores[s], s))
    return min(starts, key=lambda s: (scores[s], s))


@register("window")
@dataclass
class SlidingWindow(BlockSimilarityMethod):
    """Remove the contiguous blocks whose input and output are the most alike.

    Attributes:
        n_calib: calibration samples used (the first ones); None uses all that are given.
        rounding: ``up`` (``ceil(s * N)`` blocks) or ``nearest``.
        last_token: compare the last token of each sample (paper); False averages all tokens.
        distance: rank windows by mean ``cosine`` (2SSP authors' code) or mean ``angular``
            distance (paper).
        first_block: allow a window starting at block 0 (paper); the authors' code does not.
    """

    last_token: bool = True
    distance: str = "cosine"
    first_block: bool = False

    def check(self, model: nn.Module, sparsity: float) -> None:
        super().check(model, sparsity)
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        adapter, n, samples = self.setup(model, ctx)
        scores = window_scores(adapter, samples, n, self.last_token, ctx.progress, self.distance)
        start = best_start(scores, self.distance, self.first_block)
        drop = list(range(start, start + n))
        log.info(
            "window: removing blocks %d..%d of %d (%s %.4f)",
            start,
            start + n - 1,
            adapter.num_blocks,
            self.distance,
            scores[start],
        )
        info = {
            "n_blocks_removed": n,
            "start": start,
            "scores": scores,
            "distance": self.distance,
            "first_block": self.first_block,
            "n_calib": len(samples),
            "last_token": self.last_token,
        }
        return PrunePlan(blocks=drop, info=info)
