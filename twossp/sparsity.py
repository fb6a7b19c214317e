"""Parameter accounting and the rounding policy shared by every method.

Sparsity is measured over the decoder blocks (embeddings and head excluded), as in the 2SSP
authors' code: ``1 - block_params_after / block_params_before``. It is measured after
surgery, in one place (:func:`measure`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from twossp.adapters import get_adapter


class UnreachableSparsityError(ValueError):
    """A target sparsity this method cannot reach on this model."""


def validate_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or not 0.0 < float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in (0, 1), got {sparsity!r}")
    return float(sparsity)


ROUNDINGS = ("up", "nearest")


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def blocks_for_sparsity(sparsity: float, n_units: int, rounding: str = "up") -> int:
    """How many of ``n_units`` equal units to remove for a target ``sparsity``.

    ``rounding="up"`` rounds to the next multiple of ``1/n`` (the 2SSP authors' policy for
    block-granular methods: achieved sparsity at or above the target, by less than one
    unit); ``"nearest"`` to the closest one (halves round up), so that methods of different
    granularity meet at the same parameter budget (``protocol=matched``). At least one unit.

    Raises:
        UnreachableSparsityError: when every unit would go.
    """
    exact = sparsity * n_units
    k = math.ceil(exact - 1e-9) if check_rounding(rounding) == "up" else math.floor(exact + 0.5)
    if k >= n_units:
        raise UnreachableSparsityError(
            f"sparsity {sparsity} would remove all {n_units} units; use a lower target"
        )
    return max(k, 1)


def params_to_remove(sparsity: float, block_params: int) -> int:
    """Parameter budget for methods that remove units of unequal size (attention, MLP).

    Policy: remove units one at a time until the removed decoder-block parameters reach
    ``round(sparsity * block_params)``; the last unit may overshoot, so the achieved sparsity
    is at or above the target by less than the largest unit (the same direction as
    :func:`blocks_for_sparsity`). Methods record target and achieved in ``plan.info``.

    Raises:
        UnreachableSparsityError: if the budget is every block parameter.
    """
    budget = round(validate_sparsity(sparsity) * block_params)
    if budget >= block_params:
        raise UnreachableSparsityError(
            f"sparsity {sparsity} would remove all {block_params} block parameters; "
            "use a lower target"
        )
    return max(budget, 1)


@dataclass
class ParamCount:
    total: int
    blocks: int


def count(model: nn.Module) -> ParamCount:
    adapter = get_adapter(model)
    return ParamCount(
        total=sum(p.numel() for p in model.parameters()), blocks=adapter.block_params()
    )


def measure(before: ParamCount, after: ParamCount) -> float:
    """Achieved sparsity over the decoder blocks."""
    return 1.0 - after.blocks / before.blocks
