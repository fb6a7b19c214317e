"""The interface every pruning method implements.

A method *plans* (decides what to remove, leaving the model untouched) and *prunes* (plans and
applies the plan through :mod:`twossp.surgery`). Methods whose decisions depend on their own
earlier removals (2SSP stage 2 runs on the stage-1 model) override :meth:`prune` and plan on
a copy. Rotation methods (SliceGPT) rewrite the model in :meth:`prune`.
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from torch import nn

from twossp.data import CalibrationSpec
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan

__all__ = ["PruneContext", "PrunePlan", "PruningMethod"]

# CalibrationSpec's default n_samples: the value the hash gives an n_samples a method does not
# read, so configurations at the default keep the hash they had before it was normalised.
DEFAULT_WINDOWS = next(f.default for f in fields(CalibrationSpec) if f.name == "n_samples")


def clip_windows(count: int | None, n_windows: int, none_is_all: bool = True) -> int | None:
    """A method's count of windows as read from ``n_windows``: ``min(count, n_windows)``,
    or None ("all") for a count that is None or reaches ``n_windows`` when ``none_is_all``."""
    if none_is_all:
        return None if count is None or count >= n_windows else count
    return min(count, n_windows)


@dataclass
class PruneContext:
    """What a method is given besides the model.

    Attributes:
        sparsity: target fraction of decoder-block parameters to remove, in (0, 1).
        calibration: ``[n_samples, seqlen]`` token ids (may be empty for ``dense``).
        seed: seed for any randomness inside the method.
        progress: show progress bars.
        on_stage: the caller's hook around each stage of a method that has stages (2SSP:
            ``"stage1"``, ``"stage2"``): called with the stage's name, it returns the context
            the stage runs in (e.g. one that reads a clock on entry and exit). None: no hook.
            It observes; what the method computes does not depend on it.
    """

    sparsity: float
    calibration: torch.Tensor
    seed: int = 0
    progress: bool = True
    on_stage: Callable[[str], contextlib.AbstractContextManager] | None = None

    def stage(self, name: str) -> contextlib.AbstractContextManager:
        """The context a method runs its stage ``name`` in (see ``on_stage``)."""
        return contextlib.nullcontext() if self.on_stage is None else self.on_stage(name)


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
        None: all of them. Call it on :meth:`reading`'s view, whose counts are already
        clipped to what can be read."""
        return None

    def fewest_windows(self) -> tuple[int, str | None]:
        """The fewest calibration windows this method can work with, and the setting that
        asks for them (None: no setting of its own). A run whose corpus holds fewer complete
        windows is refused before the weights load; with more it runs on those it has."""
        return 1, None

    def reading(self, n_windows: int) -> PruningMethod:
        """This method as it runs on ``n_windows`` calibration windows: every count of
        windows it reads clipped to ``n_windows`` (a count of None, "all", stays None, and a
        count that reaches ``n_windows`` becomes None). The config hash and the run's record
        use this view, so settings that make the same computation share a hash and the
        record shows what was read. The default (no counts of its own) is ``self``."""
        return self

    def calibration_identity(self, base: CalibrationSpec) -> CalibrationSpec:
        """The run's calibration settings as the config hash sees them (on :meth:`reading`'s
        view): a method that reads a fixed number of windows does not read ``n_samples``
        beyond them, so it is set to the default (or to that number, when larger), and every
        ``n_samples`` that gives the same windows hashes alike."""
        wanted = self.calibration_windows()
        if wanted is None or wanted > base.n_samples:
            return base
        return replace(base, n_samples=max(wanted, DEFAULT_WINDOWS))

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
    were given: a run hands each method the windows of its :meth:`PruningMethod.reading`
    view, and plans and rows record the number actually read), cut to their first
    ``seqlen`` tokens when given.

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
