"""What one call of a model costs to run: its latency and peak memory, and what the model's
weights take. :mod:`twossp.evaluation.inference` measures a model's inference rows with these;
the bench (``bench/``) times its own comparisons with them.

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
- **Weight bytes**: every parameter and buffer, each storage counted once (tied embeddings
  once).

Peak GPU memory of a whole run phase (weights included) is :mod:`twossp.evaluation.runtime`'s.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from twossp.devices import input_device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
