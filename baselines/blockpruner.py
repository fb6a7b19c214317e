"""BlockPruner (Zhong et al., 2024; arXiv 2406.10594): greedy removal of attention / MLP
submodules by calibration perplexity.

Every block is split into its two residual submodules, attention (MHA) and MLP. At each step
the importance of every remaining candidate submodule is the calibration perplexity of the
current model with that submodule removed, and the least important one is removed. No healing.

Two schedules:

- ``schedule="alternate"`` (default; the 2SSP authors' comparison, ``protocol=paper``):
  ``k = ceil(s * N)`` steps, each removing the best attention and then the best MLP, so ``k``
  of each kind go (about ``k`` blocks' worth of parameters: at or above the target).
- ``schedule="greedy"`` (the paper; ``protocol=matched`` with ``rounding="nearest"``): the best
  submodule of either kind at every step, until the removed decoder-block parameters meet the
  budget ``round(s * P_blocks)``. With ``rounding="nearest"`` a step may only take a
  submodule that brings the removed count closer to the budget, and the search stops when
  none does, so it ends at the reachable point nearest the budget along its path; with
  ``rounding="up"`` it stops at the first step at or past the budget.

Deviations from the paper:
(1) Budget: the paper fixes a number of submodules; here it follows the schedule above.
(2) Calibration: the first ``n_calib`` (default 1) samples of the run's calibration set, as in
    the 2SSP authors' comparison (one C4 window of 2048 tokens); the paper scores 256 Alpaca
    samples. With several samples the NLL is summed over all of their tokens (samples have
    equal lengths, so this ranks candidates exactly as the mean perplexity does).
(3) A candidate is scored by swapping it for ``ZeroAttention`` / ``ZeroMLP`` and re-running
    only the blocks from its own onward, from cached block inputs
    (:class:`twossp.scoring.SubmoduleScorer`, shared with 2SSP stage 2); this makes the same
    choices as full forward passes (``use_cache=False``). Ties go to the lower block index,
    then to attention before MLP (the authors' strict ``<``).
(4) Surgery removes the norm that feeds only the removed submodule, and a block that loses
    both submodules is removed whole (with, on Phi, its shared norm); the budget counts exactly
    these parameters.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from twossp.adapters import ModelAdapter, get_adapter
from twossp.methods.base import PruneContext, PruningMethod, clip_windows, select_samples
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.progress import track
from twossp.scoring import KINDS, SubmoduleScorer, has_submodule, swap_submodule, zero_submodule
from twossp.sparsity import (
    UnreachableSparsityError,
    blocks_for_sparsity,
    check_rounding,
    params_to_remove,
    validate_sparsity,
)

log = logging.getLogger(__name__)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def removal_costs(adapter: ModelAdapter, i: int) -> dict[str, int]:
    """Parameters surgery removes from block ``i``.

    Returns:
        ``{"attention": ..., "mlp": ..., "rest": ...}``: the attention with the norms that go
        with it, the MLP likewise, and what goes only with the whole block (e.g. a shared norm).
    """
    block = adapter.blocks[i]

    def norms(kind: str) -> int:
        return sum(_params(getattr(block, name)) for name in adapter.norm_names(kind))

    attn = _params(adapter.attention(i)) + norms("attention")
    mlp = _params(adapter.mlp(i)) + norms("mlp")
    return {"attention": attn, "mlp": mlp, "rest": _params(block) - attn - mlp}


SCHEDULES = ("alternate", "greedy")


class _Search:
    """The model with submodules zeroed one by one, scored by one shared scorer."""

    def __init__(self, adapter: ModelAdapter, samples: torch.Tensor, use_cache: bool):
        self.adapter = adapter
        self.costs = [removal_costs(adapter, i) for i in range(adapter.num_blocks)]
        self.scorer = SubmoduleScorer(adapter, samples, use_cache)
        self.order: list[dict] = []
        self.stash: list = []
        self.removed = 0

    def cost(self, kind: str, i: int) -> int:
        """Parameters removing block ``i``'s ``kind`` submodule takes away now."""
        other = "mlp" if kind == "attention" else "attention"
        whole = not has_submodule(self.adapter, other, i)
        return self.costs[i][kind] + (self.costs[i]["rest"] if whole else 0)

    def candidates(self, kinds, max_cost: float = math.inf) -> list[tuple[str, int]]:
        return [
            (kind, i)
            for i in range(self.adapter.num_blocks)
            for kind in KINDS
            if kind in kinds
            and has_submodule(self.adapter, kind, i)
            and self.cost(kind, i) < max_cost
        ]

    def remove_best(self, candidates: list[tuple[str, int]], on_scored=None) -> int:
        """Zero the candidate whose removal gives the lowest NLL; returns its cost."""
        (kind, i), nll = self.scorer.best(candidates, on_scored)
        cost = self.cost(kind, i)
        self.stash.append((kind, i, zero_submodule(self.adapter, kind, i)))
        self.scorer.refresh_from(i)
        self.removed += cost
        self.order.append({"kind": kind, "block": i, "nll": nll, "params": cost})
        log.debug("BlockPruner: removed %s %d (NLL %.4f, %d params)", kind, i, nll, cost)
        return cost

    def restore(self) -> None:
        for kind, i, old in reversed(self.stash):
            swap_submodule(self.adapter, kind, i, old)


@torch.no_grad()
def blockpruner_search(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    budget: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    *,
    per_kind: int | None = None,
    nearest: bool = False,
) -> list[dict]:
    """Run BlockPruner's search and restore the model before returning.

    Args:
        budget: greedy schedule: remove the best submodule of either kind until ``budget``
            parameters are removed (``nearest``: only steps that bring the removed count
            closer to ``budget``).
        per_kind: alternate schedule: ``per_kind`` rounds of best attention, then best MLP.

    Returns:
        One record per removal, in order: ``kind``, ``block``, ``nll`` (summed calibration NLL
        after the removal) and ``params`` (parameters it removes).
    """
    if (budget is None) == (per_kind is None):
        raise ValueError("give exactly one of budget (greedy) or per_kind (alternate)")
    search = _Search(adapter, samples, use_cache)
    total = 2 * per_kind if per_kind is not None else budget
    unit = "steps" if per_kind is not None else "params"
    bar = track(desc="BlockPruner", total=total, unit=unit, show=progress, logger=log)
    try:
        if per_kind is not None:
            for _ in range(per_kind):
                for kind in KINDS:
                    search.remove_best(search.candidates((kind,)), bar.within)
                    bar.update(1)
        else:
            while search.removed < budget:
                limit = 2 * (budget - search.removed) if nearest else math.inf
                candidates = search.candidates(KINDS, limit)
                if not candidates:
                    if nearest and search.candidates(KINDS):
                        break  # every remaining step would land farther from the budget
                    raise UnreachableSparsityError(
                        f"removed every submodule ({search.removed} params) short of the "
                        f"budget {budget}"
                    )
                bar.update(search.remove_best(candidates, bar.within))
    finally:
        bar.close()
        search.restore()
    return search.order


@register("blockpruner")
@dataclass
class BlockPruner(PruningMethod):
    """BlockPruner with the 2SSP authors' calibration (one sample) and schedule.

    Attributes:
        n_calib: calibration samples scored (the first ones).
        schedule: ``alternate`` (``k`` rounds of best attention then best MLP) or ``greedy``
            (best of either kind, to a parameter budget).
        rounding: ``up`` or ``nearest``: of ``k`` (alternate), or of the parameter budget
            (greedy), see the module docstring.
        score_seqlen: score only the first ``score_seqlen`` tokens of each sample (a CPU budget
            knob; None scores whole windows).
        use_cache: re-run only the blocks from the candidate onward (same choices, fewer FLOPs).
    """

    n_calib: int = 1
    schedule: str = "alternate"
    rounding: str = "up"
    score_seqlen: int | None = None
    use_cache: bool = True

    def calibration_windows(self) -> int:
        return self.n_calib

    def reading(self, n_windows: int) -> BlockPruner:
        return replace(self, n_calib=clip_windows(self.n_calib, n_windows, none_is_all=False))

    def check(self, model: nn.Module, sparsity: float) -> None:
        if self.n_calib < 1:
            raise ValueError(f"n_calib must be >= 1, got {self.n_calib}")
        if self.score_seqlen is not None and self.score_seqlen < 2:
            raise ValueError(f"score_seqlen must be >= 2 or null, got {self.score_seqlen}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_rounding(self.rounding)
        adapter = get_adapter(model)
        if self.schedule == "alternate":
            blocks_for_sparsity(validate_sparsity(sparsity), adapter.num_blocks, self.rounding)
            return
        total = adapter.block_params()
        budget = params_to_remove(sparsity, total)
        costs = [removal_costs(adapter, i) for i in range(adapter.num_blocks)]
        smallest = min((c[kind] for c in costs for kind in KINDS if c[kind] > 0), default=0)
        if budget > total - smallest:
            raise UnreachableSparsityError(
                f"sparsity {sparsity} ({budget} of {total} block params) would remove every "
                "attention and MLP submodule; use a lower target"
            )
        if self.rounding == "nearest" and smallest >= 2 * budget:
            raise UnreachableSparsityError(
                f"BlockPruner at sparsity {sparsity} removes nothing: its budget of {budget} "
                f"block params is nearer to no removal than to the smallest submodule "
                f"({smallest} params); use a higher target"
            )

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        self.check(model, ctx.sparsity)
        adapter = get_adapter(model)
        total = adapter.block_params()
        samples = select_samples(ctx.calibration, self.n_calib, "BlockPruner", self.score_seqlen)
        target = {"target_sparsity": ctx.sparsity}
        if self.schedule == "alternate":
            k = blocks_for_sparsity(ctx.sparsity, adapter.num_blocks, self.rounding)
            order = blockpruner_search(
                adapter, samples, use_cache=self.use_cache, progress=ctx.progress, per_kind=k
            )
            target["per_kind"] = k
        else:
            budget = params_to_remove(ctx.sparsity, total)
            nearest = self.rounding == "nearest"
            order = blockpruner_search(
                adapter, samples, budget, self.use_cache, ctx.progress, nearest=nearest
            )
            target["target_params"] = budget
        attention = {r["block"] for r in order if r["kind"] == "attention"}
        mlp = {r["block"] for r in order if r["kind"] == "mlp"}
        whole = attention & mlp
        removed = sum(r["params"] for r in order)
        info = {
            "schedule": self.schedule,
            "rounding": self.rounding,
            "order": [[r["kind"], r["block"]] for r in order],
            "nll": [r["nll"] for r in order],
            **target,
            "removed_params": removed,
            "achieved_sparsity": removed / total,
            "n_calib": len(samples),
            "scored_tokens": samples.shape[1],
        }
        log.info(
            "BlockPruner (%s): removed %d attention, %d MLP (%d whole blocks); sparsity %.4f "
            "for target %.4f",
            self.schedule,
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
