"""ShortGPT (Men et al., 2024; arXiv 2403.03853): drop the blocks with the lowest Block Influence.

Block Influence of block ``i`` is one minus the cosine similarity between its input and its
output, averaged over every token of every calibration sample::

    BI_i = 1 - mean_{samples, tokens} cos(x_i, x_{i+1})

where ``x_i`` is the input of block ``i`` and ``x_{i+1}`` its output. The ``k`` blocks with the
lowest BI are removed whole, with no healing.

Deviations:
(1) ``k`` follows the harness's block rounding policy, ``k = ceil(s * N)``
    (:func:`twossp.sparsity.blocks_for_sparsity`, as in the 2SSP authors' code); the paper
    states a number of layers to remove.
(2) Calibration text is the run's calibration set (C4 windows, as in the 2SSP comparison), not
    the paper's PG19 sample. ``n_calib`` takes the first samples of it; ``None`` (default)
    takes all. The 2SSP authors' comparison uses 256 windows of 2048 tokens, so a faithful
    rerun sets ``calib.n_samples=256``.
(3) ``last_token=True`` scores only the last token of each sample, as the 2SSP authors' code
    does; the default follows the paper (every token). Their code also never scores block 0
    (it compares block outputs only, leaving block 0 at BI = 1); here block 0 is scored like
    the others.
(4) Cosines are computed in float32 and clamped to [-1, 1]; BI ties go to the lower block
    index (a stable sort).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from baselines.similarity import BlockSimilarityMethod, iter_block_states, token_cosine
from twossp.adapters import ModelAdapter
from twossp.methods.base import PruneContext
from twossp.plan import PrunePlan

log = logging.getLogger(__name__)


@torch.no_grad()
def block_influence(
    adapter: ModelAdapter, samples: torch.Tensor, last_token: bool = False, progress: bool = True
) -> list[float]:
    """BI of every block: 1 - mean cosine between its input and output over calibration tokens.

    Args:
        adapter: the model.
        samples: ``[n, seqlen]`` token ids, run one at a time.
        last_token: average over the last token of each sample only.
        progress: show a progress bar over samples.
    """
    n = adapter.num_blocks
    sums = torch.zeros(n, dtype=torch.float64)
    count = 0
    for sample in tqdm(samples, desc="ShortGPT BI", disable=not progress, leave=False):
        states = iter_block_states(adapter, sample[None])
        prev = next(states)
        for i, state in enumerate(states):
            a, b = (prev[:, -1], state[:, -1]) if last_token else (prev, state)
            sums[i] += token_cosine(a, b).double().sum().cpu()
            prev = state
        count += 1 if last_token else sample.numel()
    return (1.0 - sums / count).tolist()


def lowest(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` lowest scores, ties to the lower index, sorted ascending."""
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:k])


@dataclass
class ShortGPT(BlockSimilarityMethod):
    """ShortGPT block removal.

    Attributes:
        n_calib: calibration samples used (the first ones); None uses all that are given.
        last_token: score only the last token of each sample (2SSP authors' variant).
    """

    name = "shortgpt"
    last_token: bool = False

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        adapter, k, samples = self.setup(model, ctx)
        bi = block_influence(adapter, samples, self.last_token, ctx.progress)
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
        }
        return PrunePlan(blocks=drop, info=info)
