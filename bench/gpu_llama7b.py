"""2SSP on a random-init model of Llama-2-7B's shape, built on the GPU: seconds per stage and
peak GPU memory, then what the pruned models cost to run (``bench/device_check.sh`` runs it on
a lent GPU; ``--tiny`` is a CPU smoke run).

The shape is Llama-2-7B's (32 blocks, hidden 4096, FFN 11008, 32 heads, vocabulary 32000) and
the budgets are the 2SSP authors': 32 calibration windows of 2048 tokens for stage 1, the first
one for stage 2, 37.5% sparsity, bfloat16. The weights and the calibration tokens are random,
so the figures are costs, not quality: which neurons and attention modules go says nothing.
The stages are timed through the method's own stage hook (``PruneContext.on_stage``, see
:func:`timed_prune`) on a clock that synchronises the GPU; the peak covers building the model
and pruning it.

Inference (unless ``--no-inference``), through :func:`twossp.evaluation.inference.measure`
as every run measures it: prefill latency of the first calibration window (10 warm-up then 10
timed forwards with CUDA events, median and spread), greedy decode throughput with the KV
cache (batch 1, 128 new tokens after a 128-token prompt), KV-cache bytes per token, weight
bytes and the prefill's peak memory, on the dense model and on 2SSP, ShortGPT and SliceGPT at
the same sparsity. Each baseline prunes the dense model rebuilt with the same seed (the same
weights). On random weights their choices mean nothing, so their calibration is cut to keep
the run short: ShortGPT reads 16 windows (paper: 256), SliceGPT 8 (its PCA is the slow part);
both are printed and written with the figures.

Usage: ``python -m bench.gpu_llama7b --out result.json`` (``--tiny`` for the CPU smoke shape).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from baselines.shortgpt import ShortGPT
from baselines.slicegpt import SliceGPT
from bench.common import BenchConfig, now, resolve
from twossp import sparsity as sp
from twossp.evaluation.inference import InferenceSpec, measure
from twossp.evaluation.runtime import track_peak_memory
from twossp.methods import PruneContext
from twossp.methods.twossp import TwoSSP
from twossp.modeling import count_params
from twossp.plan import PrunePlan

log = logging.getLogger(__name__)
BASELINES = ("shortgpt", "slicegpt")

LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=128,
    max_position_embeddings=256,
)


def build(shape: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random-init Llama of ``shape`` made directly on ``device`` (no host copy)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=dtype)
    model.eval().requires_grad_(False)
    return model


class StageClock:
    """Seconds of each stage a method runs inside ``PruneContext.stage``, read off ``clock``
    on entering and leaving it; pass it as the context's ``on_stage``."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = self.clock()
        yield
        self.seconds[name] = self.clock() - start


def timed_prune(
    model, ctx: PruneContext, clock: Callable[[], float] = time.perf_counter
) -> tuple[PrunePlan, dict[str, float]]:
    """2SSP's prune of ``model`` under ``ctx`` with its stages timed on ``clock`` (one that
    synchronises the GPU for CUDA work): the plan and ``{"stage1": s, "stage2": s}``."""
    stages = StageClock(clock)
    plan = TwoSSP().prune(model, dataclasses.replace(ctx, on_stage=stages))
    return plan, stages.seconds


def run(
    shape: dict,
    device: str,
    dtype: str,
    windows: int,
    seqlen: int,
    sparsity: float,
    inference: Inference | None = None,
) -> dict:
    """2SSP's timed prune; then, with ``inference``, the inference figures of 2SSP's model
    and of the dense model and the baselines (:func:`inference_section`)."""
    cfg = BenchConfig(device=device, dtype=dtype, clock="wall")
    dev, torch_dtype = resolve(cfg)
    tick = now(cfg)  # synchronises CUDA before each reading
    g = torch.Generator().manual_seed(1)
    calibration = torch.randint(3, shape["vocab_size"], (windows, seqlen), generator=g)
    with track_peak_memory() as peak:
        t0 = tick()
        model = build(shape, dev, torch_dtype)
        build_seconds = tick() - t0
        params_before = count_params(model)
        ctx = PruneContext(sparsity, calibration, seed=0, progress=True)
        plan, seconds = timed_prune(model, ctx, clock=tick)
    result = {
        "shape": shape,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": dtype,
        "torch": torch.__version__,
        "calibration": [windows, seqlen],
        "sparsity": sparsity,
        "build_seconds": build_seconds,
        "stage1_seconds": seconds["stage1"],
        "stage2_seconds": seconds["stage2"],
        "n_attn": plan.info["n_attn"],
        "ffn_keep": plan.info["ffn_keep"],
        "attention_removed": plan.info["attention_order"],
        "params_before": params_before,
        "params_after": count_params(model),
        "peak_gib": peak.peak_gib,
    }
    if inference is not None:
        window = calibration[0]
        twossp = {
            "calibration": [windows, seqlen],
            **_measured(model, window, inference.spec, "twossp"),
        }
        del model
        _release(dev)
        result["inference"] = inference_section(
            shape, dev, torch_dtype, calibration, sparsity, inference, tick, {"twossp": twossp}
        )
    return result


@dataclasses.dataclass
class Inference:
    """What the inference section measures and with which calibration the baselines prune.

    Attributes:
        spec: the measurement's settings (repeats, prompt and new tokens).
        methods: pruned models measured besides 2SSP (:data:`BASELINES`).
        shortgpt_windows / slicegpt_windows: calibration windows each baseline reads.
    """

    spec: InferenceSpec
    methods: tuple[str, ...] = BASELINES
    shortgpt_windows: int = 16
    slicegpt_windows: int = 8


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measured(model, window: torch.Tensor, spec: InferenceSpec, name: str) -> dict:
    """The inference rows of ``model`` as JSON: ``{metric: {value, unit, variant}}``; a
    line of them is printed at once (the log keeps them if the run is cut short)."""
    rows = measure(model, window, spec, "calibration[0]")
    print(
        f"[gpu_llama7b] {name}: " + ", ".join(f"{m.metric} {m.value:.6g} {m.unit}" for m in rows),
        flush=True,
    )
    return {
        "params": count_params(model),
        **{
            m.metric: {"value": m.value, "unit": m.unit, "variant": m.variant, "dataset": m.dataset}
            for m in rows
        },
    }


def _baseline(name: str, inference: Inference):
    if name == "shortgpt":
        return ShortGPT(n_calib=inference.shortgpt_windows), inference.shortgpt_windows
    if name == "slicegpt":
        return SliceGPT(n_calib=inference.slicegpt_windows), inference.slicegpt_windows
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def inference_section(
    shape, device, dtype, calibration, sparsity, inference: Inference, tick, measured: dict
) -> dict:
    """Dense, then each baseline pruned from the dense model rebuilt with the same seed."""
    model = build(shape, device, dtype)
    window = calibration[0]
    measured = {"dense": _measured(model, window, inference.spec, "dense"), **measured}
    del model
    _release(device)
    for name in inference.methods:
        method, windows = _baseline(name, inference)
        model = build(shape, device, dtype)
        before = sp.count(model)
        ctx = PruneContext(sparsity, calibration[:windows], seed=0, progress=True)
        with track_peak_memory() as peak:
            t0 = tick()
            plan = method.prune(model, ctx)
            seconds = tick() - t0
        after = sp.count(model)
        print(
            f"[gpu_llama7b] {name}: {windows} calibration windows of {calibration.shape[1]} "
            f"tokens, pruned in {seconds:.1f}s, block sparsity {sp.measure(before, after):.4f}",
            flush=True,
        )
        measured[name] = {
            "calibration": [windows, int(calibration.shape[1])],
            "settings": dataclasses.asdict(method),
            "prune_seconds": seconds,
            "prune_peak_gib": peak.peak_gib,
            "achieved_sparsity": sp.measure(before, after),
            "plan_info": {k: v for k, v in plan.info.items() if _small(v)},
            **_measured(model, window, inference.spec, name),
        }
        del model, plan
        _release(device)
    _summarise(measured)
    return {"settings": dataclasses.asdict(inference.spec), "models": measured}


def _small(value) -> bool:
    """Whether a plan's info entry is worth writing (numbers, short lists)."""
    return isinstance(value, (int, float, str, bool)) or (
        isinstance(value, list) and len(value) <= 64
    )


def _summarise(measured: dict) -> None:
    dense = measured["dense"]
    for name, m in measured.items():
        prefill = m["prefill_latency"]["value"]
        decode = m["decode_throughput"]["value"]
        print(
            f"[gpu_llama7b] {name:9s} prefill {prefill:8.2f} ms "
            f"(x{dense['prefill_latency']['value'] / prefill:.2f}), decode {decode:7.1f} tok/s "
            f"(x{decode / dense['decode_throughput']['value']:.2f}), KV "
            f"{m['kv_cache_bytes_per_token']['value']:.0f} B/token, weights "
            f"{m['weight_bytes']['value'] / 2**30:.2f} GiB",
            flush=True,
        )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke run on a 4-block model")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--dtype", default=None, help="default: bfloat16 (float32 with --tiny)")
    p.add_argument("--windows", type=int, default=None, help="default: 32 (4 with --tiny)")
    p.add_argument("--seqlen", type=int, default=None, help="default: 2048 (32 with --tiny)")
    p.add_argument("--sparsity", type=float, default=0.375)
    p.add_argument("--no-inference", action="store_true", help="only 2SSP's pruning figures")
    p.add_argument("--methods", default=",".join(BASELINES), help="baselines measured, or ''")
    p.add_argument("--shortgpt-windows", type=int, default=None, help="default: 16 (4 tiny)")
    p.add_argument("--slicegpt-windows", type=int, default=None, help="default: 8 (4 tiny)")
    p.add_argument("--warmup", type=int, default=None, help="default: 10 on CUDA, 2 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="default: 10 on CUDA, 5 on CPU")
    p.add_argument("--prompt-tokens", type=int, default=None, help="default: 128 (16 tiny)")
    p.add_argument("--new-tokens", type=int, default=None, help="default: 128 (16 tiny)")
    p.add_argument("--decode-repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the result here as JSON")
    a = p.parse_args(argv)
    inference = None
    if not a.no_inference:
        spec = InferenceSpec(
            warmup=a.warmup,
            repeats=a.repeats,
            prompt_tokens=a.prompt_tokens or (16 if a.tiny else 128),
            new_tokens=a.new_tokens or (16 if a.tiny else 128),
            decode_repeats=a.decode_repeats,
        )
        methods = tuple(m for m in a.methods.split(",") if m)
        for m in methods:
            if m not in BASELINES:
                p.error(f"--methods: unknown {m!r}; choose from {', '.join(BASELINES)}")
        inference = Inference(
            spec,
            methods,
            a.shortgpt_windows or (4 if a.tiny else 16),
            a.slicegpt_windows or (4 if a.tiny else 8),
        )
    result = run(
        TINY if a.tiny else LLAMA2_7B,
        a.device or ("cpu" if a.tiny else "cuda"),
        a.dtype or ("float32" if a.tiny else "bfloat16"),
        a.windows or (4 if a.tiny else 32),
        a.seqlen or (32 if a.tiny else 2048),
        a.sparsity,
        inference,
    )
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
