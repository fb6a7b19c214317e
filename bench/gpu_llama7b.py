"""2SSP on a random-init model of Llama-2-7B's shape, built on the GPU: seconds per stage and
peak GPU memory (``make device-check`` runs it on a lent GPU; ``--tiny`` is a CPU smoke run).

The shape is Llama-2-7B's (32 blocks, hidden 4096, FFN 11008, 32 heads, vocabulary 32000) and
the budgets are the 2SSP authors': 32 calibration windows of 2048 tokens for stage 1, the first
one for stage 2, 37.5% sparsity, bfloat16. The weights and the calibration tokens are random,
so the figures are costs, not quality: which neurons and attention modules go says nothing.
The stages run as :meth:`twossp.methods.twossp.TwoSSP.prune` runs them (a test checks that the
two agree), each timed with the device synchronised.

Usage: ``python -m bench.gpu_llama7b --out result.json`` (``--tiny`` for the CPU smoke shape).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from twossp.adapters import get_adapter
from twossp.methods.base import select_samples
from twossp.methods.twossp import TwoSSP, prune_ffn, stage2_attention
from twossp.modeling import count_params

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prune_timed(model, calibration: torch.Tensor, sparsity: float, method: TwoSSP) -> dict:
    """Stage 1 then stage 2 of ``method`` on ``model`` in place, each timed."""
    device = next(model.parameters()).device
    adapter = get_adapter(model)
    budget = method.budget(model, sparsity)
    samples = select_samples(calibration, method.n_calib_stage1, "2SSP stage 1")
    scored = select_samples(samples, method.n_calib_stage2, "2SSP stage 2", method.score_seqlen)
    _sync(device)
    t0 = time.perf_counter()
    kept = prune_ffn(adapter, samples, budget.ffn_keep, progress=True)
    _sync(device)
    t1 = time.perf_counter()
    removed = stage2_attention(adapter, scored, budget.n_attn, method.use_cache, progress=True)
    _sync(device)
    t2 = time.perf_counter()
    return {
        "stage1_seconds": t1 - t0,
        "stage2_seconds": t2 - t1,
        "n_attn": budget.n_attn,
        "ffn_keep": budget.ffn_keep,
        "attention_removed": removed,
        "ffn_kept": kept,
    }


def run(shape: dict, device: str, dtype: str, windows: int, seqlen: int, sparsity: float) -> dict:
    dev = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    model = build(shape, dev, torch_dtype)
    _sync(dev)
    build_seconds = time.perf_counter() - t0
    params_before = count_params(model)
    g = torch.Generator().manual_seed(1)
    calibration = torch.randint(3, shape["vocab_size"], (windows, seqlen), generator=g)
    weights_gib = torch.cuda.memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    timed = prune_timed(model, calibration, sparsity, TwoSSP())
    timed.pop("ffn_kept")
    return {
        "shape": shape,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": dtype,
        "torch": torch.__version__,
        "calibration": [windows, seqlen],
        "sparsity": sparsity,
        "build_seconds": build_seconds,
        **timed,
        "params_before": params_before,
        "params_after": count_params(model),
        "weights_gib": weights_gib,
        "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke run on a 4-block model")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--dtype", default=None, help="default: bfloat16 (float32 with --tiny)")
    p.add_argument("--windows", type=int, default=None, help="default: 32 (4 with --tiny)")
    p.add_argument("--seqlen", type=int, default=None, help="default: 2048 (32 with --tiny)")
    p.add_argument("--sparsity", type=float, default=0.375)
    p.add_argument("--out", type=Path, default=None, help="write the result here as JSON")
    a = p.parse_args(argv)
    tiny = a.tiny
    result = run(
        TINY if tiny else LLAMA2_7B,
        a.device or ("cpu" if tiny else "cuda"),
        a.dtype or ("float32" if tiny else "bfloat16"),
        a.windows or (4 if tiny else 32),
        a.seqlen or (32 if tiny else 2048),
        a.sparsity,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
