"""The interface every pruning method implements.

A method *plans* (decides what to remove, leaving the model untouched) and *prunes* (plans and
applies the plan through :mod:`twossp.surgery`). Methods whose decisions depend on their own
earlier removals (2SSP stage 2 runs on the stage-1 model) override :meth:`prune` and plan on
a copy. Rotation methods (SliceGPT) rewrite the model in :meth:`prune`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from twossp.data import CalibrationSpec
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan

__all__ = ["PruneContext", "PrunePlan", "PruningMethod"]


@dataclass
class PruneContext:
    """What a method is given besides the model.

    Attributes:
        sparsity: target fraction of decoder-block parameters to remove, in (0, 1).
        calibration: ``[n_samples, seqlen]`` token ids (may be empty for ``dense``).
        seed: seed for any randomness inside the method.
        progress: show progress bars.
    """

    sparsity: float
    calibration: torch.Tensor
    seed: int = 0
    progress: bool = True


class PruningMethod(ABC):
    """Base class; subclasses are dataclasses whose fields are the method's settings."""

    name: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = True
    # False for methods whose result does not depend on the target (dense): the run prunes at
    # target 0 and, within a sweep, is computed once and copied to the other sparsities.
    uses_sparsity: ClassVar[bool] = True
    # False for methods whose plan cannot rebuild the pruned model (they rewrite weights).
    plan_replays: ClassVar[bool] = True

    def check(self, model: nn.Module, sparsity: float) -> None:  # noqa: B027 (optional hook)
        """Raise before any heavy work if this method cannot run on ``model`` at ``sparsity``.

        The default accepts everything; methods with limits (rounding, architectures) override.
        """

    def calibration_windows(self) -> int | None:
        """How many of the run's calibration windows this method reads (the first ones);
        None: all of them. ``calib.n_samples`` caps it (the run records what was read)."""
        return None

    def calibration_spec(self, base: CalibrationSpec, context: int | None = None):
        """The calibration data this method reads, given the run's ``base`` (default: that
        one) and the model's ``context`` length."""
        return base

    @abstractmethod
    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        """Decide what to remove. Must leave ``model`` as it found it."""

    def prune(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        """Plan, then apply the plan in place."""
        plan = self.plan(model, ctx)
        apply_plan(model, plan)
        return plan


def plan_on_copy(method: PruningMethod, model: nn.Module, ctx: PruneContext) -> PrunePlan:
    """Plan by pruning a deep copy (for methods whose :meth:`prune` is the primary path)."""
    return method.prune(copy.deepcopy(model), ctx)


def select_samples(
    calibration: torch.Tensor, n_calib: int | None, what: str, seqlen: int | None = None
) -> torch.Tensor:
    """The first ``n_calib`` calibration samples (all of them when ``None``, or when fewer
    were given: the run's ``calib.n_samples`` caps every method's count, and plans and rows
    record the number actually read), cut to their first ``seqlen`` tokens when given.

    Every method takes its calibration subset here.

    Raises:
        ValueError: if there are no samples, ``n_calib < 1`` or ``seqlen < 2``.
    """
    if calibration.dim() != 2 or calibration.numel() == 0 or calibration.shape[1] < 2:
        raise ValueError(
            f"{what} needs [n_samples, seqlen >= 2] calibration ids, got {tuple(calibration.shape)}"
        )
    if n_calib is not None and n_calib < 1:
        raise ValueError(f"{what}: n_calib must be >= 1 or null, got n_calib={n_calib}")
    if seqlen is not None and seqlen < 2:
        raise ValueError(f"{what}: score_seqlen must be >= 2 or null, got {seqlen}")
    samples = calibration if n_calib is None else calibration[:n_calib]
    return samples if seqlen is None else samples[:, :seqlen]
