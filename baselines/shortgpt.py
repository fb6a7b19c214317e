"""ShortGPT (Men et al., 2024; arXiv 2403.03853): drop the blocks with the lowest Block Influence.

Block Influence of block ``i`` is one minus the cosine similarity between its input and its
output, averaged over calibration tokens::

    BI_i = 1 - mean_{samples, tokens} cos(x_i, x_{i+1})

where ``x_i`` is the input of block ``i`` and ``x_{i+1}`` its output. The ``k`` blocks with the
lowest BI are removed whole, with no healing.

Defaults follow the 2SSP authors' comparison (``protocol=paper``): 256 C4 windows of 2048
tokens, the last token of each window only (``last_token=True``), and block 0 never scored
(their code compares block *outputs*, so block 0 keeps BI = 1 and is removed only when ``k``
exceeds the blocks scoring below 1; ``score_first_block=False``).

Deviations from the paper:
(1) ``k = ceil(s * N)`` (``rounding="up"``, the authors' policy) or the nearest whole number
    of blocks (``rounding="nearest"``, ``protocol=matched``); the paper states a number of
    layers to remove.
(2) Calibration text is the run's calibration set (C4 train windows, as in the 2SSP
    comparison), not the paper's PG19 sample; ``n_calib`` takes its first samples (``None``:
    all). The paper averages over every token (``last_token=False``) and scores every block
    (``score_first_block=True``).
(3) Cosines are computed in float32 and clamped to [-1, 1]; BI ties go to the lower block
    index (a stable sort, as the authors' ``sorted``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from baselines.similarity import BlockSimilarityMethod, iter_block_states, token_cosine
from twossp.adapters import ModelAdapter
from twossp.methods.base import PruneContext
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.progress import track

log = logging.getLogger(__name__)


@torch.no_grad()
def block_influence(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    last_token: bool = True,
    progress: bool = True,
    score_first_block: bool = False,
) -> list[float]:
    """BI of every block: 1 - mean cosine between its input and output over calibration tokens.

    Args:
        adapter: the model.
        samples: ``[n, seqlen]`` token ids, run one at a time.
        last_token: average over the last token of each sample only.
        progress: show a progress bar over samples.
        score_first_block: score block 0 too; otherwise its BI is 1 (the authors' code).
    """
    n = adapter.num_blocks
    sums = torch.zeros(n, dtype=torch.float64)
    count = 0
    for sample in track(samples, desc="ShortGPT BI", unit="windows", show=progress, logger=log):
        states = iter_block_states(adapter, sample[None])
        prev = next(states)
        for i, state in enumerate(states):
            a, b = (prev[:, -1], state[:, -1]) if last_token else (prev, state)
            sums[i] += token_cosine(a, b).double().sum().cpu()
            prev = state
        count += 1 if last_token else sample.numel()
    bi = (1.0 - sums / count).tolist()
    if not score_first_block:
        bi[0] = 1.0
    return bi


def lowest(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` lowest scores, ties to the lower index, sorted ascending."""
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:k])


@register("shortgpt")
@dataclass
class ShortGPT(BlockSimilarityMethod):
    """ShortGPT block removal.

    Attributes:
        n_calib: calibration samples used (the first ones); None uses all that are given.
        rounding: ``up`` (``ceil(s * N)`` blocks) or ``nearest``.
        last_token: score only the last token of each sample (2SSP authors' code; the paper
            uses every token).
        score_first_block: score block 0 like the others (paper); the authors' code leaves it
            at BI = 1.
    """

    last_token: bool = True
    score_first_block: bool = False

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        adapter, k, samples = self.setup(model, ctx)
        bi = block_influence(
            adapter, samples, self.last_token, ctx.progress, self.score_first_block
        )
        drop = lowest(bi, k)
        log.info(
            "ShortGPT: removing blocks %s of %d (BI %s)",
            drop,
            adapter.num_blocks,
            [round(b, 4) for b in bi],
        )
        info = {
            "n_blocks_removed": k,
            "block_influence": bi,
            "n_calib": len(samples),
            "last_token": self.last_token,
            "score_first_block": self.score_first_block,
        }
        return PrunePlan(blocks=drop, info=info)
