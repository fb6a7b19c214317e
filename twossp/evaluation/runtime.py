"""What a run needs at run time: peak GPU memory of its phases and the evaluation batch size.

- **Peak memory** of a code region (:func:`track_peak_memory`): ``max_memory_allocated`` on
  every visible CUDA device after a reset; nothing off CUDA (the bench measures CPU peaks
  with :func:`twossp.evaluation.costs.peak_call_memory`).
- **Batch size** ``auto``: on CUDA the largest batch whose estimated activation memory fits in
  a fraction of the free memory; on CPU a fixed default (8). :func:`parse_batch_size` checks a
  setting without a model (before any weights load).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from twossp.adapters import get_adapter
from twossp.devices import input_device

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 8


@dataclass
class PeakMemory:
    """Peak CUDA memory allocated in a code region (see :func:`track_peak_memory`).

    Attributes:
        per_device: ``{"cuda:0": peak bytes, ...}``; empty off CUDA.
    """

    per_device: dict[str, int] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int | None:
        """Sum of the per-device peaks (exact on one GPU); None when nothing was measured."""
        return sum(self.per_device.values()) if self.per_device else None

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 2**30


@contextmanager
def track_peak_memory() -> Iterator[PeakMemory]:
    """Record the peak memory allocated (weights included) on every visible CUDA device.

    Off CUDA this records nothing: the pipeline reports peak memory only where it is
    measured exactly (the bench measures CPU peaks with :func:`peak_call_memory`).
    """
    tracker = PeakMemory()
    if not torch.cuda.is_available():
        yield tracker
        return
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    for d in devices:
        torch.cuda.synchronize(d)
        torch.cuda.reset_peak_memory_stats(d)
    try:
        yield tracker
    finally:
        for d in devices:
            torch.cuda.synchronize(d)
            peak = int(torch.cuda.max_memory_allocated(d))
            if peak:
                tracker.per_device[str(d)] = peak


# --- batch size ------------------------------------------------------------------------------


def activation_bytes_per_sample(model: nn.Module, seqlen: int) -> int:
    """Upper estimate of the memory one ``seqlen``-token sample needs in a scored forward.

    Logits in the model's dtype plus the fp32 copy and log-softmax of the loss; the residual
    stream and one block's intermediates (gate, up, product; q, k, v, attention output); and
    the ``heads x L x L`` score matrix when attention is not a fused kernel.
    """
    config = model.config
    param = next((p for p in model.parameters() if p.device.type != "meta"), None)
    elem = param.element_size() if param is not None else 4
    vocab, hidden = config.vocab_size, config.hidden_size
    adapter = get_adapter(model)
    width = max(
        (adapter.ffn_width(i) for i in range(adapter.num_blocks) if adapter.has_mlp(i)), default=0
    )
    logits = seqlen * vocab * (elem + 2 * 4)
    block = seqlen * (6 * hidden + 3 * width) * elem
    scores = 0
    if getattr(config, "_attn_implementation", "eager") not in (
        "sdpa",
        "flash_attention_2",
        "flash_attention_3",
    ):
        scores = config.num_attention_heads * seqlen * seqlen * (elem + 4)
    return int(logits + block + scores)


def auto_batch_size(
    model: nn.Module,
    seqlen: int,
    free_bytes: int | None = None,
    fraction: float = 0.8,
    max_batch: int = 64,
    cpu_default: int = CPU_BATCH_SIZE,
) -> int:
    """The evaluation batch that fits ``fraction`` of the free accelerator memory.

    Args:
        free_bytes: free memory to plan for; None reads it from CUDA for the model's input
            device, and off CUDA returns ``cpu_default``.
    """
    if free_bytes is None:
        device = input_device(model)
        if device.type != "cuda":
            return cpu_default
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_sample = activation_bytes_per_sample(model, seqlen)
    batch = int(fraction * free_bytes // per_sample)
    batch = max(1, min(max_batch, batch))
    log.info(
        "auto batch size %d (%.2f GiB free, ~%.1f MiB per sample of %d tokens)",
        batch,
        free_bytes / 2**30,
        per_sample / 2**20,
        seqlen,
    )
    return batch


def parse_batch_size(setting: int | str) -> int | str:
    """An ``eval.batch_size`` setting checked without a model: a positive int or ``"auto"``."""
    if isinstance(setting, str):
        text = setting.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {setting!r}")
        setting = int(text)
    if isinstance(setting, bool) or setting < 1 or setting != math.floor(setting):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {setting!r}")
    return int(setting)


def resolve_batch_size(setting: int | str, model: nn.Module, seqlen: int) -> int:
    """An ``eval.batch_size`` setting (a positive int or ``"auto"``) as a number."""
    parsed = parse_batch_size(setting)
    return auto_batch_size(model, seqlen) if parsed == "auto" else parsed
