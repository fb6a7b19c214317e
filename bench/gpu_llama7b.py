"""2SSP on a random-init model of Llama-2-7B's shape, built on the GPU: seconds per stage and
peak GPU memory (``bench/device_check.sh`` runs it on a lent GPU; ``--tiny`` is a CPU smoke run).

The shape is Llama-2-7B's (32 blocks, hidden 4096, FFN 11008, 32 heads, vocabulary 32000) and
the budgets are the 2SSP authors': 32 calibration windows of 2048 tokens for stage 1, the first
one for stage 2, 37.5% sparsity, bfloat16. The weights and the calibration tokens are random,
so the figures are costs, not quality: which neurons and attention modules go says nothing.
The stages are timed by :meth:`twossp.methods.twossp.TwoSSP.prune_timed` on a clock that
synchronises the GPU; the peak covers building the model and pruning it.

Usage: ``python -m bench.gpu_llama7b --out result.json`` (``--tiny`` for the CPU smoke shape).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from bench.common import BenchConfig, now, resolve
from twossp.evaluation.runtime import track_peak_memory
from twossp.methods import PruneContext
from twossp.methods.twossp import TwoSSP
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


def run(shape: dict, device: str, dtype: str, windows: int, seqlen: int, sparsity: float) -> dict:
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
        plan, (stage1, stage2) = TwoSSP().prune_timed(model, ctx, clock=tick)
    return {
        "shape": shape,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": dtype,
        "torch": torch.__version__,
        "calibration": [windows, seqlen],
        "sparsity": sparsity,
        "build_seconds": build_seconds,
        "stage1_seconds": stage1,
        "stage2_seconds": stage2,
        "n_attn": plan.info["n_attn"],
        "ffn_keep": plan.info["ffn_keep"],
        "attention_removed": plan.info["attention_order"],
        "params_before": params_before,
        "params_after": count_params(model),
        "peak_gib": peak.peak_gib,
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
    result = run(
        TINY if a.tiny else LLAMA2_7B,
        a.device or ("cpu" if a.tiny else "cuda"),
        a.dtype or ("float32" if a.tiny else "bfloat16"),
        a.windows or (4 if a.tiny else 32),
        a.seqlen or (32 if a.tiny else 2048),
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
