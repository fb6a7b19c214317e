"""Rotate the residual stream into its principal directions and slice the smallest ones.

SliceGPT, Sec. 3.3-3.4 (Algorithm 1): block by block, the inputs of the attention (the
residual stream entering the block), of the MLP (the stream after attention) and of the next
block are collected on calibration data, and ``Q`` = eigenvectors of ``sum X^T X`` (float64,
descending eigenvalues) rotates them. Readers get ``W @ Q[:, :d]``, writers ``Q[:, :d]^T @ W``,
and each residual connection carries ``Q_in[:, :d_in]^T @ Q_out[:, :d_out]``. Signals are
collected on the model as already rotated and sliced up to that point, as in the authors'
``rotate_and_slice``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from baselines.slicegpt.modules import install_shortcut_block
from twossp.adapters import ModelAdapter
from twossp.devices import input_device
from twossp.forward import capture_block_inputs, run_blocks
from twossp.progress import track

log = logging.getLogger(__name__)


class SecondMoment:
    """Accumulates ``sum X^T X`` over the token rows of ``X`` in float64."""

    def __init__(self):
        self.matrix: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        update = x.T @ x
        self.matrix = update if self.matrix is None else self.matrix + update

    def principal_directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (descending) and eigenvectors (columns) of the accumulated matrix.

        Each eigenvector's sign is fixed so that its largest-magnitude entry is positive.
        """
        values, vectors = torch.linalg.eigh(self.matrix)
        order = torch.argsort(values, descending=True)
        values, vectors = values[order], vectors[:, order]
        pivot = vectors.abs().argmax(dim=0)
        signs = torch.sign(vectors[pivot, torch.arange(vectors.shape[1])])
        signs[signs == 0] = 1
        return values, vectors * signs


@torch.no_grad()
def rotate_inputs(linears: list[nn.Linear], q: torch.Tensor) -> None:
    """Readers: ``W <- W @ q`` with ``q`` of shape ``[old_in, new_in]``."""
    for linear in linears:
        weight = linear.weight.data
        linear.weight.data = (weight.double() @ q.to(weight.device)).to(weight.dtype)
        linear.in_features = q.shape[1]


@torch.no_grad()
def rotate_outputs(linear: nn.Linear, q: torch.Tensor) -> None:
    """Writers: ``W <- q^T @ W`` and ``b <- q^T @ b`` with ``q`` of shape ``[old_out, new_out]``."""
    weight = linear.weight.data
    q = q.to(weight.device)
    linear.weight.data = (q.T @ weight.double()).to(weight.dtype)
    if linear.bias is not None:
        linear.bias.data = (q.T @ linear.bias.data.double()).to(linear.bias.dtype)
    linear.out_features = q.shape[1]


@torch.no_grad()
def rotate_embeddings(embedding: nn.Embedding, q: torch.Tensor) -> None:
    weight = embedding.weight.data
    embedding.weight.data = (weight.double() @ q.to(weight.device)).to(weight.dtype)
    embedding.embedding_dim = q.shape[1]


def _shortcut_weight(q_from: torch.Tensor, q_to: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Weight ``[d_to, d_from]`` of the linear ``x -> x @ q_from^T @ q_to``."""
    return (q_to.T @ q_from.to(q_to.device)).to(dtype)


class _Signals:
    """Calibration inputs of the current block, in chunks, with their block kwargs."""

    def __init__(self, adapter: ModelAdapter, samples: torch.Tensor, batch_size: int):
        self.adapter = adapter
        device = input_device(adapter.model)
        self.chunks = [c.to(device) for c in samples.split(batch_size)]
        self.hidden: list[torch.Tensor] = []
        self.kwargs: list[dict] = []

    def capture_embeddings(self) -> SecondMoment:
        """(Re)capture the inputs of block 0 and return their second moment."""
        moment = SecondMoment()
        self.hidden, self.kwargs = [], []
        for chunk in self.chunks:
            hidden, kwargs = capture_block_inputs(self.adapter, chunk)
            self.hidden.append(hidden)
            self.kwargs.append(kwargs)
            moment.add(hidden)
        return moment

    def run(
        self, i: int, observe: Callable[[torch.Tensor], None] | None = None, keep: bool = False
    ):
        """Run block ``i`` on every chunk; ``observe`` sees each output; ``keep`` advances."""
        outputs = []
        for hidden, kwargs in zip(self.hidden, self.kwargs, strict=True):
            out = run_blocks(self.adapter, hidden, kwargs, i, i + 1)
            if observe is not None:
                observe(out)
            if keep:
                outputs.append(out)
        if keep:
            self.hidden = outputs


def _observe_input(module: nn.Module, moment: SecondMoment):
    return module.register_forward_pre_hook(lambda m, args: moment.add(args[0]))


@torch.no_grad()
def rotate_and_slice(
    adapter: ModelAdapter,
    samples: torch.Tensor,
    dim: int,
    slice_head: bool = False,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Rotate a norm-fused model (see :func:`fuse_norms`) and slice it to width ``dim``, in place.

    Args:
        samples: ``[n, seqlen]`` calibration token ids.
        dim: width kept of the residual stream everywhere (``hidden_size`` keeps all).
        slice_head: also slice the stream entering the head; otherwise the last block writes
            the full width (the authors' default).

    Returns:
        Diagnostics: the fraction of calibration signal energy kept at each slicing point.
    """
    width = adapter.config.hidden_size
    if not 1 <= dim <= width:
        raise ValueError(f"slicing dimension must be in [1, {width}], got {dim}")
    dtype = next(adapter.model.parameters()).dtype
    signals = _Signals(adapter, samples, batch_size)
    kept: list[float] = []

    def directions(moment: SecondMoment, d: int) -> torch.Tensor:
        values, vectors = moment.principal_directions()
        kept.append(float(values[:d].clamp_min(0).sum() / values.clamp_min(0).sum()))
        return vectors[:, :d]

    q_in = directions(signals.capture_embeddings(), dim)
    rotate_embeddings(adapter.embeddings, q_in)
    signals.capture_embeddings()  # exact (rotated, sliced) inputs of block 0
    n = adapter.num_blocks
    eye = torch.eye(width, dtype=dtype, device=q_in.device)
    for i in track(range(n), desc="SliceGPT", unit="blocks", show=progress, logger=log):
        d_out = width if (i == n - 1 and not slice_head) else dim
        attn_readers, mlp_readers = adapter.residual_readers(i)
        attn_writer, mlp_writer = adapter.residual_writers(i)

        # Attention reads the rotated stream; its residual maps back to the original basis.
        rotate_inputs(attn_readers, q_in)
        install_shortcut_block(adapter, i, q_in.to(dtype), eye)
        mid = SecondMoment()
        handle = _observe_input(adapter.norms(i)[1], mid)
        try:
            signals.run(i)
        finally:
            handle.remove()
        q_mid = directions(mid, dim)
        rotate_outputs(attn_writer, q_mid)
        rotate_inputs(mlp_readers, q_mid)
        attn_shortcut = _shortcut_weight(q_in, q_mid, dtype)
        install_shortcut_block(adapter, i, attn_shortcut, q_mid.to(dtype))

        # Block output, still in the original basis, gives the next rotation.
        out = SecondMoment()
        signals.run(i, observe=out.add)
        q_out = directions(out, d_out)
        rotate_outputs(mlp_writer, q_out)
        install_shortcut_block(adapter, i, attn_shortcut, _shortcut_weight(q_mid, q_out, dtype))
        signals.run(i, keep=True)  # inputs of the next block, as the pruned model computes them
        q_in = q_out
    rotate_inputs([adapter.lm_head], q_in)
    return {"kept_energy": kept}
