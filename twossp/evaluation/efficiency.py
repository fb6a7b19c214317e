"""Instruments for the bench: what a (pruned) model costs to run (FLOPs, latency, peak memory).

Run-time helpers the pipeline needs (peak GPU memory of a phase, the evaluation batch size)
live in :mod:`twossp.evaluation.runtime`.

Counts are read through the adapter, so they hold for every method's output (blocks whose
attention or MLP was removed, narrower FFNs, SliceGPT's rotated blocks with their shortcut
linears, removed blocks):

- **FLOPs** of one forward pass: ``2 * tokens * in * out`` for every ``nn.Linear`` (the LM head
  included: logits are computed at every position), plus the attention core of each block
  that still has attention, ``QK^T`` and ``AV``: ``2 * 2 * batch * heads * head_dim * L(L+1)/2``
  with causal masking (kernels that skip masked tiles do about that much work). Norms,
  activations, rotary embeddings and softmax are left out; they are a few percent at most.
- **Latency**: CUDA events around the call on GPU; on CPU ``time.perf_counter`` (``clock=
  "wall"``) or the process's CPU time (``clock="process"``, which other processes on a shared
  machine barely disturb; it equals wall time for single-threaded work on an idle machine).
  Warm-up calls first, then the median of the timed repeats. :func:`time_interleaved` times
  several callables round-robin so that a background load slows them alike.
- **Peak memory** of a call, above what was allocated before it. On CUDA this is
  ``torch.cuda.max_memory_allocated`` after a reset. On CPU, RSS is a poor measure (the C
  allocator keeps freed pages, so a second call shows no growth, and other threads' memory
  mixes in) and ``tracemalloc`` does not see torch's allocations; instead the call runs once
  under ``torch.profiler`` with ``profile_memory=True`` and the allocator's own alloc / free
  events are replayed in time order. That is the same quantity as CUDA's
  ``max_memory_allocated`` (bytes held by tensors, kernel workspaces included), exact and
  repeatable. The profiled call is not timed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from twossp.adapters import get_adapter
from twossp.devices import input_device

log = logging.getLogger(__name__)


# --- devices -------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- parameters and FLOPs --------------------------------------------------------------------


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model``, each storage counted once."""
    seen: set[tuple] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.device, t.data_ptr()) if t.device.type != "meta" else (id(t),)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


@dataclass
class FlopCount:
    """Multiply-adds counted as two FLOPs, of one forward pass over ``batch x seqlen`` tokens."""

    linear: float
    attention: float
    head: float
    batch: int
    seqlen: int

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.head


def _linear_macs(module: nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def _attention_width(adapter, i: int) -> int:
    """``heads * head_dim`` of block ``i``'s attention (what ``QK^T`` and ``AV`` contract)."""
    attn = adapter.attention(i)
    config = adapter.config
    head_dim = getattr(attn, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = getattr(attn, "num_heads", None) or config.num_attention_heads
    return int(heads) * int(head_dim)


def forward_flops(model: nn.Module, batch: int, seqlen: int, causal: bool = True) -> FlopCount:
    """FLOPs of ``model(input_ids)`` on a ``[batch, seqlen]`` input (see the module notes)."""
    adapter = get_adapter(model)
    tokens = batch * seqlen
    pairs = seqlen * (seqlen + 1) / 2 if causal else seqlen * seqlen
    linear = attention = 0.0
    for i in range(adapter.num_blocks):
        linear += 2.0 * tokens * _linear_macs(adapter.blocks[i])
        if adapter.has_attention(i):
            attention += 2 * 2.0 * batch * pairs * _attention_width(adapter, i)
    head = 2.0 * tokens * _linear_macs(adapter.lm_head)
    return FlopCount(linear=linear, attention=attention, head=head, batch=batch, seqlen=seqlen)


# --- latency ---------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call: the median of ``times`` (warm-up calls excluded)."""

    median: float
    times: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed calls."""
        return (max(self.times) - min(self.times)) / self.median if self.times else 0.0


CLOCKS = ("wall", "process")


def cpu_clock(clock: str) -> Callable[[], float]:
    """``time.perf_counter`` for ``"wall"``, ``time.process_time`` for ``"process"``."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return time.perf_counter if clock == "wall" else time.process_time


def _timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    now = cpu_clock(clock)
    t0 = now()
    fn()
    return now() - t0


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    clock: str = "wall",
) -> dict[str, Timing]:
    """Time several callables round-robin (rotating the order each round); medians per name.

    On a machine shared with other work, a slow spell then hits every callable, and the
    ratios of the medians stay meaningful.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = torch.device(device)
    cpu_clock(clock)
    names = list(fns)
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                fns[name]()
        _synchronize(device)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(_timed(fns[name], device, clock))
    return {name: Timing(statistics.median(ts), ts) for name, ts in times.items()}


def forward_fn(model: nn.Module, input_ids: torch.Tensor) -> Callable[[], object]:
    """A no-argument callable running one forward pass of ``model`` (no KV cache)."""
    ids = input_ids.to(input_device(model))

    def call():
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits

    return call


# --- peak memory -----------------------------------------------------------------------------


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 pointed at /dev/null: the profiler's C++ side prints start / stop
    lines there that no logging level turns off (Python's ``sys.stderr`` is left alone)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
            del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def peak_call_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated before it.

    The result of ``fn`` is dropped inside the measurement, so it counts toward the peak.
    """
    device = torch.device(device)
    with torch.no_grad():
        if device.type == "cuda":
            _synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            result = fn()
            _synchronize(device)
            del result
            return int(torch.cuda.max_memory_allocated(device) - before)
        return _cpu_peak_bytes(fn)
