"""The unpruned model, run through the same pipeline to give the reference row."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from twossp.methods.base import PruneContext, PruningMethod
from twossp.methods.registry import register
from twossp.plan import PrunePlan


@register("dense")
@dataclass
class Dense(PruningMethod):
    needs_calibration = False
    uses_sparsity = False

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        return PrunePlan(info={"note": "nothing removed"})
