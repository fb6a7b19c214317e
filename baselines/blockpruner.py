"""BlockPruner (Zhong et al., 2024; arXiv 2406.10594): greedy removal of attention / MLP
submodules by calibration perplexity.

Every block is split into its two residual submodules, attention (MHA) and MLP. At each step
the importance of every remaining submodule is the calibration perplexity of the current model
with that submodule removed, and the least important one is removed. Steps repeat until the
parameter budget is met. No healing.

Deviations:
(1) Stopping rule: submodules are removed until the removed decoder-block parameters reach
    ``round(s * P_blocks)`` (:func:`twossp.sparsity.params_to_remove`), so the achieved
    sparsity is at or above the target by less than one submodule; the paper fixes a number of
    submodules instead. Target and achieved are recorded in ``plan.info``.
(2) Calibration: the first ``n_calib`` (default 1) samples of the run's calibration set, as in
    the 2SSP authors' comparison (one C4 window of 2048 tokens); the paper scores 256 Alpaca
    samples. With several samples the NLL is summed over all of their tokens (samples have
    equal lengths, so this ranks candidates exactly as the mean perplexity does).
(3) The 2SSP authors' code alternates (one attention, then one MLP, ``ceil(s * N)`` of each);
    here, as in the paper, the best submodule of either kind is taken at every step.
(4) A candidate is scored by swapping it for ``ZeroAttention`` / ``ZeroMLP`` and re-running
    only the blocks from its own onward, from cached block inputs
    (:class:`twossp.scoring.SubmoduleScorer`, shared with 2SSP stage 2); this makes the same
    choices as full forward passes (``use_cache=False``). Ties go to the lower block index,
    then to attention before MLP.
(5) Surgery removes the norm that feeds only the removed submodule, and a block that loses
    both submodules is removed whole (with, on Phi, its shared norm); the budget counts exactly
    these parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from twossp.adapters import ModelAdapter, get_adapter
from twossp.methods.base import PruneContext, PruningMethod, select_samples
from twossp.plan import PrunePlan
from twossp.scoring import KINDS, SubmoduleScorer, has_submodule, swap_submodule, zero_submodule
from twossp.sparsity import UnreachableSparsityError, params_to_remove

log = logging.getLogger(__name__)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def removal_costs(adapter: ModelAdapter, i: int) -> dict[str, int]:
    """Parameters surgery removes from block ``i``.

    Returns:
        ``{"attention": ..., "mlp": ..., "rest": ...}``: the attention with the norm feeding only
        it, the MLP likewise, and what goes only with the whole block (e.g. a shared norm).
    """
    block = adapter.blocks[i]

    def norm(name: str | None) -> int:
        return _params(getattr(block, name)) if name is not None else 0

    attn = _params(adapter.attention(i)) + norm(adapter.attn_norm_name)
    mlp = _params(adapter.mlp(i)) + norm(adapter.mlp_norm_name)
    return {"attention": attn, "mlp": mlp, "rest": _params(block) - attn - mlp}


@torch.no_grad()
def blockpruner_search(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    budget: int,
    use_cache: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Greedily remove the submodule whose removal gives the lowest calibration NLL until
    ``budget`` parameters are removed. The model is restored before returning.

    Returns:
        One record per removal, in order: ``kind``, ``block``, ``nll`` (summed calibration NLL
        after the removal) and ``params`` (parameters it removes).
    """
    costs = [removal_costs(adapter, i) for i in range(adapter.num_blocks)]
    scorer = SubmoduleScorer(adapter, samples, use_cache)
    order: list[dict] = []
    stash = []
    removed = 0
    bar = tqdm(
        total=budget,
        desc="BlockPruner",
        unit="param",
        unit_scale=True,
        disable=not progress,
        leave=False,
    )
    try:
        while removed < budget:
            candidates = [
                (kind, i)
                for i in range(adapter.num_blocks)
                for kind in KINDS
                if has_submodule(adapter, kind, i)
            ]
            if not candidates:
                raise UnreachableSparsityError(
                    f"removed every submodule ({removed} params) short of the budget {budget}"
                )
            (kind, i), nll = scorer.best(candidates)
            other = "mlp" if kind == "attention" else "attention"
            cost = costs[i][kind] + (0 if has_submodule(adapter, other, i) else costs[i]["rest"])
            stash.append((kind, i, zero_submodule(adapter, kind, i)))
            scorer.refresh_from(i)
            removed += cost
            bar.update(cost)
            order.append({"kind": kind, "block": i, "nll": nll, "params": cost})
            log.debug("BlockPruner: removed %s %d (NLL %.4f, %d params)", kind, i, nll, cost)
    finally:
        bar.close()
        for kind, i, old in reversed(stash):
            swap_submodule(adapter, kind, i, old)
    return order


@dataclass
class BlockPruner(PruningMethod):
    """BlockPruner with the 2SSP authors' calibration (one sample).

    Attributes:
        n_calib: calibration samples scored (the first ones).
        use_cache: re-run only the blocks from the candidate onward (same choices, fewer FLOPs).
    """

    name = "blockpruner"
    n_calib: int = 1
    use_cache: bool = True

    def check(self, model: nn.Module, sparsity: float) -> None:
        if self.n_calib < 1:
            raise ValueError(f"n_calib must be >= 1, got {self.n_calib}")
        adapter = get_adapter(model)
        total = adapter.block_params()
        budget = params_to_remove(sparsity, total)
        costs = [removal_costs(adapter, i) for i in range(adapter.num_blocks)]
        smallest = min((c[kind] for c in costs for kind in KINDS if c[kind] > 0), default=0)
        if budget > total - smallest:
            raise UnreachableSparsityError(
                f"sparsity {sparsity} ({budget} of {total} block params) would remove every "
                "attention and MLP submodule; use a lower target"
            )

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        self.check(model, ctx.sparsity)
        adapter = get_adapter(model)
        total = adapter.block_params()
        budget = params_to_remove(ctx.sparsity, total)
        samples = select_samples(ctx.calibration, self.n_calib, "BlockPruner")
        order = blockpruner_search(adapter, samples, budget, self.use_cache, ctx.progress)
        attention = {r["block"] for r in order if r["kind"] == "attention"}
        mlp = {r["block"] for r in order if r["kind"] == "mlp"}
        whole = attention & mlp
        removed = sum(r["params"] for r in order)
        info = {
            "order": [[r["kind"], r["block"]] for r in order],
            "nll": [r["nll"] for r in order],
            "target_sparsity": ctx.sparsity,
            "target_params": budget,
            "removed_params": removed,
            "achieved_sparsity": removed / total,
            "n_calib": len(samples),
        }
        log.info(
            "BlockPruner: removed %d attention, %d MLP (%d whole blocks); sparsity %.4f "
            "for target %.4f",
            len(attention),
            len(mlp),
            len(whole),
            removed / total,
            ctx.sparsity,
        )
        return PrunePlan(
            attention=sorted(attention - whole),
            mlp=sorted(mlp - whole),
            blocks=sorted(whole),
            info=info,
        )
