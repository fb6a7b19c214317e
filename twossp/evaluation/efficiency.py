"""What a (pruned) model costs to run: parameters, FLOPs, latency, peak memory, batch size.

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
- **Batch size** ``auto``: on CUDA the largest batch whose estimated activation memory fits in
  a fraction of the free memory; on CPU a fixed default (8).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from twossp.adapters import get_adapter
from twossp.modeling import count_params, input_device  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 8


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


def time_call(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    clock: str = "wall",
) -> Timing:
    """Median time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    return time_interleaved({"fn": fn}, device, warmup, repeats, clock)["fn"]


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


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

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
