"""2SSP: Two-Stage Structured Pruning (Sandri, Cunegatti, Iacca, 2025; arXiv 2501.17771).

Stage 1 (width) removes FFN intermediate neurons in every block: a neuron's importance is the
L2 norm over tokens of its activation (the input of the down / output projection), averaged
over the first ``n_calib_stage1`` calibration samples (32 windows of 2048 tokens in the paper);
the top-k neurons are kept. Stage 2 (depth) then removes whole attention submodules one at a
time, each time the one whose removal gives the lowest perplexity on the first
``n_calib_stage2`` calibration samples (1). The split between the stages
follows the paper's balancing rule::

    N_attn = round(N_blocks * s ** ((P_mlp / P_attn) / alpha)),   alpha = 1.5

with parameters counted over the decoder blocks, and each MLP keeping
``round(width * (1 - r_mlp))`` neurons, where ``r_mlp`` spreads the remaining budget
``round(s * P_blocks) - N_attn * P_attn`` evenly over the blocks (as the authors' code does).

Deviations: (1) stage 2 re-runs only the blocks after the candidate, from cached block inputs,
instead of the whole model; it chooses exactly what the full-forward loop chooses
(``use_cache=False`` runs that loop, and the tests compare both). (2) With
``n_calib_stage2 > 1`` the authors concatenate samples into one longer sequence; here each
sample is scored separately and NLL is pooled over all tokens, which keeps every window within
the model's context. (3) A removed attention also drops the norm that fed only it, so the
measured sparsity can exceed the target by that norm's few parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import nn

from twossp.adapters import ModelAdapter, get_adapter
from twossp.devices import input_device
from twossp.methods.base import (
    PruneContext,
    PruningMethod,
    clip_windows,
    plan_on_copy,
    select_samples,
)
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.progress import track
from twossp.scoring import SubmoduleScorer
from twossp.sparsity import UnreachableSparsityError
from twossp.surgery import keep_ffn_neurons, remove_attention, renumber_cache_layers

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """How a global sparsity is split between the two stages."""

    n_attn: int
    ffn_keep: int
    ffn_width: int
    mlp_rate: float


def balance_sparsity(
    sparsity: float,
    n_blocks: int,
    p_attn: int,
    p_mlp: int,
    p_blocks: int,
    width: int,
    alpha: float = 1.5,
    n_attn: int | None = None,
) -> Budget:
    """The paper's balancing rule (Eq. 5) plus the per-block MLP budget.

    Raises:
        UnreachableSparsityError: if the attention removals alone overshoot the target, or
            removing every MLP neuron as well still falls short of it.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if n_attn is None:
        n_attn = round(n_blocks * sparsity ** ((p_mlp / p_attn) / alpha))
    target = round(sparsity * p_blocks)
    if n_attn * p_attn > target:
        raise UnreachableSparsityError(
            f"removing {n_attn} attention submodules ({n_attn * p_attn} params) already exceeds "
            f"the target of {target} params at sparsity {sparsity}"
        )
    if n_attn * p_attn + n_blocks * p_mlp < target:
        raise UnreachableSparsityError(
            f"sparsity {sparsity} is unreachable with {n_attn} attention removals: even "
            "removing every FFN neuron falls short"
        )
    per_block = round((target - n_attn * p_attn) / n_blocks)
    mlp_rate = per_block / p_mlp
    keep = round(width * (1 - mlp_rate))
    if keep < 1:
        raise UnreachableSparsityError(
            f"sparsity {sparsity} leaves no FFN neuron (keep={keep}); use a lower target"
        )
    return Budget(n_attn=n_attn, ffn_keep=keep, ffn_width=width, mlp_rate=mlp_rate)


@torch.no_grad()
def stage1_ffn_neurons(
    adapter: ModelAdapter, samples: torch.Tensor, keep: int, progress: bool = True
) -> dict[int, list[int]]:
    """Keep, per block, the ``keep`` neurons with the largest mean activation L2 norm."""
    norms: dict[int, torch.Tensor] = {}
    hooks = []
    for i in range(adapter.num_blocks):

        def hook(module, args, i=i):
            act = args[0].float()  # [batch, tokens, width]
            norm = act.norm(p=2, dim=1).sum(dim=0)
            norms[i] = norm if i not in norms else norms[i] + norm

        hooks.append(adapter.ffn_out_proj(i).register_forward_pre_hook(hook))
    device = input_device(adapter.model)
    try:
        for sample in track(
            samples, desc="2SSP stage 1", unit="windows", show=progress, logger=log
        ):
            adapter.model(input_ids=sample[None].to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return {
        i: torch.topk(norms[i] / len(samples), keep).indices.sort().values.tolist()
        for i in range(adapter.num_blocks)
    }


def prune_ffn(
    adapter: ModelAdapter, samples: torch.Tensor, keep: int, progress: bool = True
) -> dict[int, list[int]]:
    """Stage 1 in place: slice every FFN to its ``keep`` most important neurons."""
    kept = stage1_ffn_neurons(adapter, samples, keep, progress)
    for i, idx in kept.items():
        keep_ffn_neurons(adapter, i, idx)
    adapter.config.intermediate_size = keep
    return kept


@torch.no_grad()
def stage2_attention(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    n_attn: int,
    use_cache: bool = True,
    progress: bool = True,
) -> list[int]:
    """Remove ``n_attn`` attention submodules greedily by calibration perplexity, in place.

    Returns the removed block indices in removal order. Ties go to the lower index.
    """
    scorer = SubmoduleScorer(adapter, samples, use_cache)
    removed: list[int] = []
    steps = track(range(n_attn), desc="2SSP stage 2", unit="steps", show=progress, logger=log)
    for _ in steps:
        present = [("attention", i) for i in range(adapter.num_blocks) if adapter.has_attention(i)]
        (_, best), best_nll = scorer.best(present, steps.within)
        remove_attention(adapter, best)
        scorer.refresh_from(best)
        removed.append(best)
        log.debug("stage 2: removed attention %d (calibration NLL %.4f)", best, best_nll)
    renumber_cache_layers(adapter)
    return removed


@register("twossp")
@dataclass
class TwoSSP(PruningMethod):
    """2SSP with the paper's defaults.

    Attributes:
        alpha: balancing exponent divisor (paper: 1.5).
        n_calib_stage1: calibration samples whose activations rank the FFN neurons (paper: 32).
        n_calib_stage2: calibration samples scored in stage 2 (paper: 1).
        score_seqlen: stage 2 scores only the first ``score_seqlen`` tokens of each sample
            (a CPU budget knob; None, the paper, scores whole windows).
        n_attn: force the number of attention removals (ablation); None uses the rule.
        use_cache: stage 2 from cached block inputs (same choices, fewer FLOPs).
    """

    alpha: float = 1.5
    n_calib_stage1: int = 32
    n_calib_stage2: int = 1
    score_seqlen: int | None = None
    n_attn: int | None = None
    use_cache: bool = True

    def budget(self, model: nn.Module, sparsity: float) -> Budget:
        adapter = get_adapter(model)
        p_attn, p_mlp = adapter.submodule_params(0)
        return balance_sparsity(
            sparsity,
            adapter.num_blocks,
            p_attn,
            p_mlp,
            adapter.block_params(),
            adapter.ffn_width(0),
            self.alpha,
            self.n_attn,
        )

    def check(self, model: nn.Module, sparsity: float) -> None:
        adapter = get_adapter(model)
        if not all(
            adapter.has_attention(i) and adapter.has_mlp(i) for i in range(adapter.num_blocks)
        ):
            raise ValueError("2SSP expects a model whose blocks all have attention and an MLP")
        if not 1 <= self.n_calib_stage2 <= self.n_calib_stage1:
            raise ValueError(
                "need 1 <= n_calib_stage2 <= n_calib_stage1 (stage 2 scores the first stage-1 "
                f"samples), got n_calib_stage1={self.n_calib_stage1}, "
                f"n_calib_stage2={self.n_calib_stage2}"
            )
        budget = self.budget(model, sparsity)
        if budget.n_attn == 0 and budget.ffn_keep >= budget.ffn_width:
            raise UnreachableSparsityError(
                f"2SSP at sparsity {sparsity} removes nothing from this model (no attention "
                f"module, and all {budget.ffn_width} FFN neurons of every block kept); use a "
                "higher target"
            )
        if self.score_seqlen is not None and self.score_seqlen < 2:
            raise ValueError(f"score_seqlen must be >= 2 or null, got {self.score_seqlen}")

    def calibration_windows(self) -> int:
        return self.n_calib_stage1

    def fewest_windows(self) -> tuple[int, str]:
        # Stage 2 scores exactly n_calib_stage2 windows; stage 1 can rank with fewer than
        # n_calib_stage1 (the authors' code averages over whatever it is handed).
        return self.n_calib_stage2, "method.n_calib_stage2"

    def reading(self, n_windows: int) -> TwoSSP:
        return replace(
            self, n_calib_stage1=clip_windows(self.n_calib_stage1, n_windows, none_is_all=False)
        )

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        return plan_on_copy(self, model, ctx)

    def prune(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        """Stage 1 then stage 2 on ``model`` itself, each inside ``ctx.stage`` (``"stage1"``,
        ``"stage2"``: the caller's hook, e.g. the bench's stage clock)."""
        adapter = get_adapter(model)
        budget = self.budget(model, ctx.sparsity)
        samples = select_samples(ctx.calibration, self.n_calib_stage1, "2SSP stage 1")
        scored = select_samples(samples, self.n_calib_stage2, "2SSP stage 2", self.score_seqlen)
        with ctx.stage("stage1"):
            keep = prune_ffn(adapter, samples, budget.ffn_keep, ctx.progress)
        with ctx.stage("stage2"):
            removed = stage2_attention(
                adapter,
                scored,
                budget.n_attn,
                self.use_cache,
                ctx.progress,
            )
        info = {
            "n_attn": budget.n_attn,
            "ffn_keep": budget.ffn_keep,
            "ffn_width": budget.ffn_width,
            "mlp_rate": budget.mlp_rate,
            "attention_order": removed,
            "n_calib_stage1": len(samples),
            "n_calib_stage2": self.n_calib_stage2,
            "stage2_tokens": scored.shape[1],
        }
        log.info(
            "2SSP: kept %d/%d FFN neurons per block, removed attention %s",
            budget.ffn_keep,
            budget.ffn_width,
            removed,
        )
        return PrunePlan(ffn_keep=keep, attention=sorted(removed), info=info)
