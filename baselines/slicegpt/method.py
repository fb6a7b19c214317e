"""The SliceGPT pruning method: settings, support check, slicing width from a sparsity."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from torch import nn

from baselines.slicegpt.fusion import fuse_norms
from baselines.slicegpt.modules import is_rotated
from baselines.slicegpt.rotate import rotate_and_slice
from twossp.adapters import SUPPORTED_MODEL_TYPES, ModelAdapter, adapter_class, get_adapter
from twossp.methods.base import (
    PruneContext,
    PruningMethod,
    clip_windows,
    plan_on_copy,
    select_samples,
)
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.sparsity import UnreachableSparsityError, validate_sparsity

log = logging.getLogger(__name__)


def rotation_model_types() -> tuple[str, ...]:
    """The ``model_type`` values whose adapter supports residual rotation."""
    return tuple(t for t in SUPPORTED_MODEL_TYPES if adapter_class(t).supports_rotation)


@dataclass(frozen=True)
class _BlockCost:
    """Parameters of one block as a function of the sliced widths."""

    fixed: int  # untouched by slicing (reader biases, anything not on the residual stream)
    reader_rows: int  # sum of the readers' output widths: each keeps rows x d_in weights
    attn_writer_cols: int
    attn_writer_bias: bool
    mlp_writer_cols: int
    mlp_writer_bias: bool

    def at(self, dim: int, d_out: int) -> int:
        attn = self.attn_writer_cols * dim + (dim if self.attn_writer_bias else 0)
        mlp = self.mlp_writer_cols * d_out + (d_out if self.mlp_writer_bias else 0)
        shortcuts = dim * dim + dim * d_out
        return self.fixed + self.reader_rows * dim + attn + mlp + shortcuts


def _numel(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def block_costs(adapter: ModelAdapter) -> list[_BlockCost]:
    """Per-block cost model of an unrotated model (norm scales vanish after fusion)."""
    costs = []
    for i in range(adapter.num_blocks):
        readers = [r for group in adapter.residual_readers(i) for r in group]
        attn_writer, mlp_writer = adapter.residual_writers(i)
        touched = sum(r.weight.numel() for r in readers)
        touched += _numel([attn_writer, mlp_writer, *adapter.norms(i)])
        costs.append(
            _BlockCost(
                fixed=_numel([adapter.blocks[i]]) - touched,
                reader_rows=sum(r.out_features for r in readers),
                attn_writer_cols=attn_writer.in_features,
                attn_writer_bias=attn_writer.bias is not None,
                mlp_writer_cols=mlp_writer.in_features,
                mlp_writer_bias=mlp_writer.bias is not None,
            )
        )
    return costs


def sliced_block_params(costs: list[_BlockCost], width: int, dim: int, slice_head: bool) -> int:
    """Decoder-block parameters after slicing to ``dim`` (the last block writes ``width``
    unless ``slice_head``)."""
    last = len(costs) - 1
    return sum(
        c.at(dim, width if (i == last and not slice_head) else dim) for i, c in enumerate(costs)
    )


@dataclass
class Slicing:
    """The slicing width chosen for a target sparsity and what it achieves."""

    dim: int
    width: int
    params_before: int
    params_after: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.params_after / self.params_before


def choose_dim(adapter: ModelAdapter, sparsity: float, round_to: int, slice_head: bool) -> Slicing:
    """The multiple of ``round_to`` whose block sparsity is closest to ``sparsity``.

    Ties go to the narrower width (more sparsity).
    """
    width = adapter.config.hidden_size
    costs = block_costs(adapter)
    before = adapter.block_params()
    best = None
    for dim in range(round_to, width + 1, round_to):
        after = sliced_block_params(costs, width, dim, slice_head)
        error = abs(1.0 - after / before - sparsity)
        if best is None or error < best[0] - 1e-12:
            best = (error, Slicing(dim, width, before, after))
    if best is None:
        raise UnreachableSparsityError(f"round_to={round_to} exceeds the hidden size {width}")
    return best[1]


def embedding_dim(adapter: ModelAdapter, sparsity: float, round_to: int, slice_head: bool):
    """The authors' width: ``int((1 - s) * D)`` rounded down to a multiple of ``round_to``
    (``s`` of the embedding dimension; the block sparsity it gives is lower than ``s``)."""
    width = adapter.config.hidden_size
    dim = int((1 - sparsity) * width)
    dim -= dim % round_to
    if dim < 1:
        raise UnreachableSparsityError(
            f"SliceGPT: sparsity {sparsity} leaves no embedding dimension of {width} "
            f"(in multiples of round_to={round_to})"
        )
    after = sliced_block_params(block_costs(adapter), width, dim, slice_head)
    return Slicing(dim, width, adapter.block_params(), after)


WIDTH_RULES = ("embedding", "block_params")


def _no_smaller(adapter: ModelAdapter, method: SliceGPT, sparsity: float, slicing: Slicing) -> str:
    """Why slicing to ``slicing.dim`` leaves the blocks no smaller, and the widest width that
    does shrink them."""
    costs = block_costs(adapter)
    width, step = slicing.width, max(1, method.round_to)
    before = slicing.params_before
    dims = range(1, width + 1)
    after = {d: sliced_block_params(costs, width, d, method.slice_head) for d in dims}
    shrinking = [d for d in range(width - width % step, 0, -step) if after[d] < before]
    fix = "use a higher target"
    if shrinking and method.hidden_dim is None and method.width == "embedding":
        d = shrinking[0]
        fix = f"use a sparsity above {1 - (d + step) / width:.3f} (width {d} or less)"
    elif shrinking and method.hidden_dim is None:
        d = shrinking[0]
        fix += f" (width {d} gives block sparsity {1 - after[d] / before:.3f})"
    return (
        f"SliceGPT at sparsity {sparsity} slices the hidden size {width} to {slicing.dim}, which "
        f"leaves the decoder blocks no smaller ({slicing.params_after} parameters against "
        f"{slicing.params_before}: each block gains two shortcut matrices); {fix}"
    )


@register("slicegpt")
@dataclass
class SliceGPT(PruningMethod):
    """SliceGPT (Ashkboos et al., 2024) with the 2SSP authors' settings by default.

    Attributes:
        width: ``embedding`` slices ``s`` of the embedding dimension (the authors; block
            sparsity falls short of ``s``); ``block_params`` picks the width whose decoder-block
            sparsity is closest to ``s`` (``protocol=matched``).
        center_embeddings: subtract each embedding row's mean when the norms are fused, as
            the authors' code does for every model (right for LayerNorm, but it changes an
            RMSNorm model's function); False keeps the fused model exactly equivalent.
        n_calib: calibration samples used (the first ``n_calib``); None uses all given.
        batch_size: calibration samples per forward pass.
        round_to: the sliced width is preferably a multiple of this (authors: 8, for GPU
            kernels). When no multiple is within ``tolerance`` of the target (small models:
            one step of 8 on stories260K is ~8 % sparsity) the closest width of any size is
            used and a warning logged.
        tolerance: largest accepted ``|achieved - target|`` block sparsity; ``check`` raises
            ``UnreachableSparsityError`` when even the closest width misses by more.
        slice_head: also slice the stream entering the head (authors' default: no).
        hidden_dim: force the sliced width (ablations, tests); None derives it from the
            sparsity. ``hidden_size`` rotates without slicing.
    """

    plan_replays = False  # the plan records widths; the rotations live in the weights
    width: str = "embedding"
    center_embeddings: bool = True
    n_calib: int | None = None
    batch_size: int = 8
    round_to: int = 8
    tolerance: float = 0.02
    slice_head: bool = False
    hidden_dim: int | None = None

    def check(self, model: nn.Module, sparsity: float) -> None:
        self._check_model(model, sparsity)
        slicing = self.slicing(model, sparsity)
        if slicing.params_after >= slicing.params_before:
            raise UnreachableSparsityError(_no_smaller(get_adapter(model), self, sparsity, slicing))

    def calibration_windows(self) -> int | None:
        return self.n_calib

    def reading(self, n_windows: int) -> SliceGPT:
        return replace(self, n_calib=clip_windows(self.n_calib, n_windows))

    def _check_model(self, model: nn.Module, sparsity: float) -> None:
        validate_sparsity(sparsity)
        model_type = model.config.model_type
        supported = rotation_model_types()
        if model_type not in supported:
            raise ValueError(
                f"SliceGPT does not support model_type {model_type!r}; supported: "
                f"{', '.join(supported)}"
            )
        adapter = get_adapter(model)
        self._check_settings(adapter)
        if is_rotated(adapter):
            raise ValueError("SliceGPT expects an unrotated model; this one is already rotated")
        for i in range(adapter.num_blocks):
            if not (adapter.has_attention(i) and adapter.has_mlp(i)):
                raise ValueError(
                    f"SliceGPT expects every block to have attention and an MLP "
                    f"(block {i} does not)"
                )
            for norm in (*adapter.norms(i), adapter.final_norm):
                if getattr(norm, "weight", None) is None or getattr(norm, "bias", None) is not None:
                    raise ValueError(
                        f"SliceGPT needs RMSNorm with a scale; found {type(norm).__name__}"
                    )

    def _check_settings(self, adapter: ModelAdapter) -> None:
        width = adapter.config.hidden_size
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_calib is not None and self.n_calib < 1:
            raise ValueError(f"n_calib must be >= 1 or None, got {self.n_calib}")
        if self.width not in WIDTH_RULES:
            raise ValueError(f"width must be one of {WIDTH_RULES}, got {self.width!r}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.hidden_dim is not None and not 1 <= self.hidden_dim <= width:
            raise ValueError(f"hidden_dim must be in [1, {width}] or None, got {self.hidden_dim}")

    def slicing(self, model: nn.Module, sparsity: float) -> Slicing:
        """The width this method slices ``model`` to at ``sparsity``, before any work."""
        adapter = get_adapter(model)
        if self.hidden_dim is not None:
            width = adapter.config.hidden_size
            after = sliced_block_params(
                block_costs(adapter), width, self.hidden_dim, self.slice_head
            )
            return Slicing(self.hidden_dim, width, adapter.block_params(), after)
        if self.width == "embedding":
            return embedding_dim(adapter, sparsity, self.round_to, self.slice_head)
        slicing = choose_dim(adapter, sparsity, self.round_to, self.slice_head)
        if abs(slicing.sparsity - sparsity) > self.tolerance and self.round_to > 1:
            coarse = slicing
            slicing = choose_dim(adapter, sparsity, 1, self.slice_head)
            log.warning(
                "SliceGPT: no multiple of round_to=%d is within %.3f of sparsity %.4f (closest "
                "%d gives %.4f); using width %d (%.4f)",
                self.round_to,
                self.tolerance,
                sparsity,
                coarse.dim,
                coarse.sparsity,
                slicing.dim,
                slicing.sparsity,
            )
        if abs(slicing.sparsity - sparsity) > self.tolerance:
            raise UnreachableSparsityError(
                f"SliceGPT: the closest width {slicing.dim}/{slicing.width} gives block sparsity "
                f"{slicing.sparsity:.4f}, more than tolerance={self.tolerance} from the target "
                f"{sparsity}"
            )
        return slicing

    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        return plan_on_copy(self, model, ctx)

    def prune(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        self._check_model(model, ctx.sparsity)
        slicing = self.slicing(model, ctx.sparsity)
        samples = select_samples(ctx.calibration, self.n_calib, "SliceGPT")
        adapter = get_adapter(model)
        start = time.perf_counter()
        fuse_norms(adapter, self.center_embeddings)
        diagnostics = rotate_and_slice(
            adapter, samples, slicing.dim, self.slice_head, self.batch_size, ctx.progress
        )
        measured = 1.0 - adapter.block_params() / slicing.params_before
        log.info(
            "SliceGPT: hidden %d -> %d, block sparsity %.4f (target %.4f) in %.1fs",
            slicing.width,
            slicing.dim,
            measured,
            ctx.sparsity,
            time.perf_counter() - start,
        )
        info = {
            "hidden_dim": slicing.dim,
            "hidden_size": slicing.width,
            "slice_head": self.slice_head,
            "predicted_sparsity": slicing.sparsity,
            "width_rule": self.width,
            "center_embeddings": self.center_embeddings,
            "n_calib": len(samples),
            "kept_energy": diagnostics["kept_energy"],
        }
        return PrunePlan(info=info, replayable=False)
