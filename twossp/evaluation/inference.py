"""What a (pruned or dense) model costs to run: prefill latency, decode throughput, KV cache,
weight bytes and the prefill's peak memory, as typed result rows with units.

- **Prefill latency**: one forward pass (no KV cache, logits at every position) over one
  window of the evaluation length, as the 2SSP authors time it (``--evaluate_inference``:
  10 warm-up forwards, then 10 timed ones with CUDA events). On CUDA the defaults are theirs;
  elsewhere fewer (:attr:`InferenceSpec.warmup` / ``repeats``). Reported: the median in ms,
  with min, max and the quartiles of the timed repeats in the row's ``variant``.
- **Decode throughput**: ``generate`` (greedy, with the KV cache, batch 1) from a fixed prompt
  of ``prompt_tokens`` to exactly ``new_tokens`` new tokens, in tokens per second of the
  decoding steps alone: each repeat times a one-token ``generate`` (the prompt's prefill and
  the first token) and the full one, and the rate is ``(new_tokens - 1)`` over their
  difference. The whole call's rate (prefill included, as a user waiting for the answer sees
  it) is in the variant (``end_to_end_*``).
- **KV-cache bytes per token** (:mod:`twossp.evaluation.kv_cache`), from the structure: for every
  block that still has attention, ``2 (K and V) x kv_heads x head_dim x dtype bytes``. After
  generation the real cache object is measured too (``measured_bytes_per_token`` in the
  variant): the two agree unless a layer caches something else. Sliding-window layers are
  counted per token as if the window were not reached.
- **Weight bytes**: every parameter and buffer, each storage once.
- **Prefill peak memory**, above what was allocated before the call (activations, logits,
  workspaces): on CUDA ``max_memory_allocated`` after a reset, on CPU the allocator events
  of one profiled call replayed in order (:func:`twossp.evaluation.costs.peak_call_memory`,
  tensors only, no RSS). The variant names which.

:class:`StaticGreedy` (greedy decoding over a static KV cache with a ``torch.compile``d step)
and :func:`compiled_forward` (a compiled prefill) time what a deployment stack leaves of the
per-module overhead; ``bench/inference_replay.py`` uses them, the per-run rows do not.

Every row carries the device (and its name: the GPU's, or the CPU model from
``/proc/cpuinfo``), dtype, batch size and thread count, so rows of different machines are
never compared by accident.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from twossp.devices import input_device
from twossp.evaluation.costs import (
    forward_fn,
    peak_call_memory,
    time_interleaved,
    weight_bytes,
)
from twossp.evaluation.kv_cache import cache_bytes, kv_shape
from twossp.results import Metric

log = logging.getLogger(__name__)

CUDA_WARMUP, CUDA_REPEATS = 10, 10  # the 2SSP authors' main.py --evaluate_inference
CPU_WARMUP, CPU_REPEATS = 2, 5
DECODE_WARMUP_TOKENS = 8  # one short untimed generate warms up what decoding uses


@dataclass
class InferenceSpec:
    """Settings of the inference measurement (``eval.inference_settings`` in the config).

    Attributes:
        warmup: untimed prefill forwards first; None: 10 on CUDA, 2 elsewhere.
        repeats: timed prefill forwards; None: 10 on CUDA, 5 elsewhere.
        prompt_tokens: length of the decode prompt (the window's first tokens).
        new_tokens: tokens generated per decode run (exactly; end-of-text does not stop it).
        decode_repeats: timed ``generate`` calls, after one short untimed one (8 tokens).
        peak_memory: measure the prefill's peak memory (on CPU one extra profiled forward).
    """

    warmup: int | None = None
    repeats: int | None = None
    prompt_tokens: int = 128
    new_tokens: int = 128
    decode_repeats: int = 3
    peak_memory: bool = True

    def check(self, context: int | None = None, window: int | None = None) -> None:
        """Raise on a setting that cannot work (before any weights load).

        Args:
            context: the model's context length, when known.
            window: the prefill window's length (the evaluation length), when known.
        """
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(
                f"eval.inference_settings.warmup must be >= 0 or null, got {self.warmup}"
            )
        for name in ("repeats",):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(
                    f"eval.inference_settings.{name} must be >= 1 or null, got {value}"
                )
        for name in ("prompt_tokens", "new_tokens", "decode_repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"eval.inference_settings.{name} must be an integer >= 1, got {value!r}"
                )
        if context and self.prompt_tokens + self.new_tokens > context:
            raise ValueError(
                f"eval.inference_settings: prompt_tokens + new_tokens = "
                f"{self.prompt_tokens + self.new_tokens} exceeds the model's context of {context} "
                "tokens; lower one of them"
            )
        if window is not None and window < self.prompt_tokens:
            raise ValueError(
                f"eval.inference_settings.prompt_tokens {self.prompt_tokens} exceeds the "
                f"evaluation window of {window} tokens (the prompt is its start); lower it"
            )

    def counts(self, device: torch.device) -> tuple[int, int]:
        """(warm-up, timed) prefill forwards on ``device``."""
        cuda = device.type == "cuda"
        warmup = self.warmup if self.warmup is not None else (CUDA_WARMUP if cuda else CPU_WARMUP)
        repeats = (
            self.repeats if self.repeats is not None else (CUDA_REPEATS if cuda else CPU_REPEATS)
        )
        return warmup, repeats

    @classmethod
    def from_dict(cls, settings: dict | None) -> InferenceSpec:
        """From the config's sub-dict; unknown keys are named with the accepted ones."""
        settings = dict(settings or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(
                f"eval.inference_settings has unknown keys {unknown}; accepted: {sorted(known)}"
            )
        return cls(**settings)

    def identity(self) -> dict:
        return asdict(self)


# --- machine ---------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (``/proc/cpuinfo``, else ``platform.processor()``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or device.type


def machine_variant(model: nn.Module, batch_size: int = 1) -> dict:
    """Device, its name, dtype, batch size and thread count: what the figures depend on."""
    device = input_device(model)
    param = next(model.parameters())
    return {
        "device": device.type,
        "device_name": device_name(device),
        "dtype": str(param.dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- decode ----------------------------------------------------------------------------------


def greedy_generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int):
    """``generate`` with the KV cache, greedy, exactly ``new_tokens`` new tokens."""
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    with torch.no_grad():
        return model.generate(
            prompt.to(input_device(model)),
            attention_mask=torch.ones_like(prompt).to(input_device(model)),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0 if pad is None else pad,
            return_dict_in_generate=True,
        )


def greedy_reference(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """What greedy decoding must produce: a plain forward (no cache) per new token."""
    seq = prompt.to(input_device(model))
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=seq, use_cache=False).logits[:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq


# --- compiled decoding -----------------------------------------------------------------------


def _own_code(fn, name: str):
    """``fn`` with a code object of its own, named ``name``.

    Dynamo keeps compiled code, and counts recompiles against its ``recompile_limit`` (8), per
    code object: one step function shared by many models would recompile for each (other
    weights, other shapes), look each call up among all of them, and fall back to eager after
    the eighth. A code object per model gives each model its own single graph.
    """
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def compiled_forward(model: nn.Module, mode: str | None = None):
    """``ids -> logits``: a ``torch.compile``d forward of ``model`` without KV cache (a prefill
    as :func:`twossp.evaluation.costs.forward_fn` runs it eagerly). The first call compiles."""

    def prefill(ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, use_cache=False).logits

    fn = _own_code(prefill, f"prefill_{id(model):x}")
    return torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)


class StaticGreedy:
    """Greedy decoding as a deployment stack runs it: a static KV cache (transformers'
    ``StaticCache``: allocated once, updated in place) and a ``torch.compile``d decode step
    (one token in, its argmax out: fixed shapes, so one graph serves every step).

    The prompt's prefill runs eagerly into the cache, as transformers' own static-cache
    ``generate`` does (its shape changes with the prompt). Positions are passed explicitly.
    A block without attention (2SSP) uses no cache slot (the remaining attention modules hold
    slots ``0..n-1``, :func:`twossp.surgery.renumber_cache_layers`), so the slots past them
    are never allocated; with no attention left there is no cache at all (each token's output
    then depends on that token alone). SliceGPT's shortcut blocks hand the cache to their
    attention like any block.

    Args:
        model: a causal LM in eval mode.
        max_len: prompt plus new tokens the cache holds; the graph is compiled for it, and
            every shorter run reuses it.
        compile: compile the decode step (False: the same loop run eagerly).
        mode: the ``torch.compile`` mode (None: the default; ``"reduce-overhead"`` adds CUDA
            graphs on a GPU).
    """

    def __init__(
        self, model: nn.Module, max_len: int, compile: bool = True, mode: str | None = None
    ):
        from transformers import StaticCache

        self.model = model
        self.max_len = int(max_len)
        self.device = input_device(model)
        has_attention = bool(kv_shape(model).attention_blocks)
        cache = (
            StaticCache(config=model.config, max_cache_len=self.max_len) if has_attention else None
        )
        self.cache = cache

        def decode_step(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
            out = model(
                input_ids=token, position_ids=position, cache=cache, use_cache=has_attention
            )
            return out.logits[:, -1].argmax(-1, keepdim=True)

        step = _own_code(decode_step, f"decode_step_{id(self):x}")
        self.step = (
            torch.compile(step, fullgraph=True, dynamic=False, mode=mode) if compile else step
        )

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float]:
        """(``prompt`` followed by ``new_tokens`` greedy tokens, seconds of the decode steps
        after the first new token: the prompt's prefill and the first token not included).

        Args:
            prompt: ``[1, prompt_len]`` token ids.
            new_tokens: tokens to generate (at least 1; end-of-text does not stop it).
        """
        prompt = prompt.reshape(1, -1).to(self.device)
        length = prompt.shape[1]
        if new_tokens < 1 or length + new_tokens > self.max_len:
            raise ValueError(
                f"StaticGreedy holds {self.max_len} tokens; a prompt of {length} and "
                f"{new_tokens} new tokens (at least 1) do not fit"
            )
        if self.cache is not None:
            self.cache.reset()
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        logits = self.model(
            input_ids=prompt,
            position_ids=positions,
            cache=self.cache,
            use_cache=self.cache is not None,
        ).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        tokens = [token]
        _synchronize(self.device)
        start = _clock(self.device)
        for i in range(new_tokens - 1):
            token = self.step(token, positions[:, -1:] + (i + 1))
            tokens.append(token)
        seconds = _elapsed(start, self.device)
        return torch.cat([prompt, *tokens], dim=1), seconds


def _output_cache(out):
    """The KV cache of a ``generate`` output (named ``cache`` or ``past_key_values``)."""
    for name in ("cache", "past_key_values"):
        value = out.get(name) if hasattr(out, "get") else None
        if value is not None:
            return value
    return None


# --- the measurement -------------------------------------------------------------------------


def _spread(values: list[float]) -> dict:
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3}


def measure(
    model: nn.Module,
    window: torch.Tensor,
    spec: InferenceSpec | None = None,
    source: str | None = None,
) -> list[Metric]:
    """Inference rows of ``model`` (see the module notes).

    Args:
        model: a causal LM in eval mode (pruned or not).
        window: ``[seqlen]`` or ``[1, seqlen]`` token ids: timed as the prefill; its first
            ``prompt_tokens`` are the decode prompt.
        spec: settings; defaults when None.
        source: where ``window`` comes from (a dataset name); the ``dataset`` of timed rows.
    """
    spec = spec or InferenceSpec()
    context = getattr(model.config, "max_position_embeddings", None)
    window = window.reshape(1, -1)
    spec.check(context, window.shape[1])
    device = input_device(model)
    machine = machine_variant(model)
    warmup, repeats = spec.counts(device)
    metrics = []

    prefill = forward_fn(model, window)
    timing = time_interleaved({"prefill": prefill}, device, warmup, repeats)["prefill"]
    ms = [t * 1000.0 for t in timing.times]
    variant = {
        **machine,
        "seqlen": int(window.shape[1]),
        "warmup": warmup,
        "repeats": repeats,
        "clock": "cuda events" if device.type == "cuda" else "perf_counter",
        **{k: v for k, v in _spread(ms).items()},
        "times_ms": ms,
    }
    median_ms = statistics.median(ms)
    log.debug("prefill of %d tokens: %.2f ms (median of %d)", window.shape[1], median_ms, repeats)
    metrics.append(Metric("prefill_latency", source, median_ms, variant, unit="ms"))

    prompt = window[:, : spec.prompt_tokens]
    warmup_tokens = min(spec.new_tokens, DECODE_WARMUP_TOKENS)
    greedy_generate(model, prompt, warmup_tokens)  # kernels, allocator, caches
    first, seconds = [], []
    for _ in range(spec.decode_repeats):
        first.append(_timed_generate(model, prompt, 1, device)[0])
        elapsed, out = _timed_generate(model, prompt, spec.new_tokens, device)
        seconds.append(elapsed)
    cache = _output_cache(out)  # the last run's: what the KV-cache figure is checked against
    steps = spec.new_tokens - 1
    rates = [
        steps / (full - one) if steps and full > one else spec.new_tokens / full
        for one, full in zip(first, seconds, strict=True)
    ]
    end_to_end = [spec.new_tokens / s for s in seconds]
    variant = {
        **machine,
        "prompt_tokens": spec.prompt_tokens,
        "new_tokens": spec.new_tokens,
        "repeats": spec.decode_repeats,
        "warmup_tokens": warmup_tokens,
        "greedy": True,
        "kv_cache": True,
        "includes_prompt_prefill": False,
        **_spread(rates),
        "seconds": seconds,
        "first_token_seconds": first,
        "end_to_end_tokens_per_s": statistics.median(end_to_end),
    }
    rate = statistics.median(rates)
    log.debug("decode: %.1f tokens/s (%d new after %d)", rate, spec.new_tokens, spec.prompt_tokens)
    metrics.append(Metric("decode_throughput", source, rate, variant, unit="tokens/s"))

    shape = kv_shape(model)
    measured = None
    if cache is not None:
        held, length = cache_bytes(cache)
        measured = held / length if length else None
    variant = {
        **machine,
        "attention_blocks": len(shape.attention_blocks),
        "blocks": shape.blocks,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "measured_bytes_per_token": measured,
    }
    if measured is not None and abs(measured - shape.bytes_per_token) > 0.5:
        log.warning(
            "KV cache: %d bytes per token from the structure, %.1f in the real cache",
            shape.bytes_per_token,
            measured,
        )
    metrics.append(
        Metric(
            "kv_cache_bytes_per_token", None, float(shape.bytes_per_token), variant, unit="bytes"
        )
    )
    metrics.append(Metric("weight_bytes", None, float(weight_bytes(model)), machine, unit="bytes"))

    if spec.peak_memory:
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        peak = peak_call_memory(prefill, device)
        how = (
            "cuda max_memory_allocated above the allocation before the call"
            if device.type == "cuda"
            else "torch profiler allocator events replayed (tensors only, not RSS)"
        )
        variant = {**machine, "seqlen": int(window.shape[1]), "measure": how}
        if before is not None:
            variant["total_bytes"] = int(before + peak)
        metrics.append(Metric("prefill_peak_bytes", source, float(peak), variant, unit="bytes"))
    return metrics


def _timed_generate(model, prompt, new_tokens: int, device: torch.device):
    """Seconds of one greedy ``generate`` of ``new_tokens`` tokens, and its output."""
    _synchronize(device)
    start = _clock(device)
    out = greedy_generate(model, prompt, new_tokens)
    return _elapsed(start, device), out


def _clock(device: torch.device):
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        return start
    return time.perf_counter()


def _elapsed(start, device: torch.device) -> float:
    if device.type == "cuda":
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    return time.perf_counter() - start


def first_window(streams: dict[str, torch.Tensor], seqlen: int, vocab: int, seed: int = 0):
    """(window, source): the first ``seqlen`` tokens of the first evaluation corpus (the same
    input for dense and every method), or seeded random tokens when there is none."""
    for name, ids in streams.items():
        ids = ids.reshape(-1)
        if ids.numel() >= seqlen:
            return ids[:seqlen].clone(), name
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (seqlen,), generator=g), "random"
