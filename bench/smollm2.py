"""The SmolLM2-135M section of the bench: a real 30-block model on this machine.

1. Matmul throughput of the FFN shape (512 tokens x 576 -> 1536) in float32 and bfloat16,
   measured in the same run, and the forward tokens/s of the dense model in both dtypes
   against the limit that throughput implies (forward FLOPs / matmul FLOP/s), plus how far
   bfloat16's perplexity lands from float32's on a few WikiText-2 windows: is bf16 the faster
   and closer choice on this CPU?
2. Pruning seconds of every method at 37.5% with the ``cpu_smollm2`` experiment's settings
   (composed through Hydra exactly as the sweep composes them, ``protocol=paper``), each on
   a fresh copy of the float32 model, calibration read before the clock starts.

Skipped (with a note) when ../shared has no SmolLM2 GGUF.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch

from bench.common import ROOT, SHARED, BenchConfig, clock_name, now
from bench.flops import forward_flops
from twossp.evaluation.costs import time_interleaved
from twossp.evaluation.perplexity import perplexity

log = logging.getLogger("bench")

GGUF_DIR = SHARED / "assets" / "models" / "SmolLM2-135M-Instruct-Q4_1"
FFN_SHAPE = (512, 576, 1536)


def available() -> bool:
    return any(GGUF_DIR.glob("*.gguf"))


def _spec(method: str, sparsity: float, cfg: BenchConfig, overrides: tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    from twossp.config import register_method_schemas, register_resolvers, to_run_spec

    register_resolvers()
    register_method_schemas()

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose(
            "config",
            overrides=[
                "experiment=cpu_smollm2",
                f"method={method}",
                f"sparsity={sparsity}",
                f"model.device={cfg.device}",
                "progress=false",
                *overrides,
            ],
        )
    return to_run_spec(config)


def matmul_gflops(dtype: torch.dtype, cfg: BenchConfig) -> float:
    tokens, d_in, d_out = FFN_SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(tokens, d_in, generator=g).to(dtype)
    b = torch.randn(d_in, d_out, generator=g).to(dtype)
    clock = clock_name(cfg)
    timing = time_interleaved({"mm": lambda: a @ b}, repeats=5, warmup=2, clock=clock)["mm"]
    return 2 * tokens * d_in * d_out / timing.median / 1e9


def dtype_choice(cfg: BenchConfig, model, ids: torch.Tensor) -> list[dict]:
    """Forward tokens/s and perplexity of the dense model in float32 and bfloat16."""
    rows = []
    seqlen = FFN_SHAPE[0]
    sample = ids[:seqlen][None]
    for dtype in (torch.float32, torch.bfloat16):
        work = copy.deepcopy(model).to(dtype)
        with torch.no_grad():
            timing = time_interleaved(
                {"fwd": lambda m=work: m(input_ids=sample, use_cache=False)},
                repeats=cfg.repeats,
                warmup=cfg.warmup,
                clock=clock_name(cfg),
            )["fwd"]
        flops = forward_flops(work, 1, seqlen).total
        gflops = matmul_gflops(dtype, cfg)
        ppl = perplexity(work, ids, seqlen, 1, max_windows=4, progress=False).ppl
        rows.append(
            {
                "dtype": str(dtype).removeprefix("torch."),
                "matmul_gflops": gflops,
                "forward_seconds": timing.median,
                "tokens_per_second": seqlen / timing.median,
                "flop_limit_tokens_per_second": seqlen / (flops / (gflops * 1e9)),
                "ppl_4x512": ppl,
            }
        )
        log.info("bench: smollm2 %s %.0f tok/s", rows[-1]["dtype"], rows[-1]["tokens_per_second"])
    return rows


def prune_seconds(cfg: BenchConfig, sparsity: float = 0.375) -> list[dict]:
    """Every method at ``sparsity`` with the cpu_smollm2 settings, timed like the sweep."""
    from twossp import sparsity as sp
    from twossp.methods import METHODS, PruneContext
    from twossp.modeling import load_model
    from twossp.pipeline import prepare

    tick = now(cfg)
    base = None
    rows = []
    for name in cfg.methods or METHODS:
        spec = _spec(name, sparsity, cfg)
        ready = prepare(spec)
        if base is None:
            base, _ = load_model(spec.model, with_tokenizer=False)
        work = copy.deepcopy(base)
        before = sp.count(work)
        ctx = PruneContext(ready.target, ready.calibration, spec.seed, progress=False)
        t0 = tick()
        ready.method.prune(work, ctx)
        seconds = tick() - t0
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "achieved_sparsity": sp.measure(before, sp.count(work)),
                "calibration": list(ready.calibration.shape),
            }
        )
        log.info("bench: smollm2 prune %-11s %8.2fs", name, seconds)
    return rows


def run_section(cfg: BenchConfig) -> dict | None:
    if not available():
        log.warning("bench: no SmolLM2 GGUF under %s; section skipped", GGUF_DIR)
        return None
    from twossp.data import token_stream
    from twossp.modeling import load_model

    spec = _spec("dense", 0.375, cfg)
    model, tokenizer = load_model(spec.model)
    wikitext = next(d for d in spec.eval.datasets if d.name == "wikitext2")
    ids, _ = token_stream(tokenizer, wikitext, FFN_SHAPE[0])
    out = {"model": str(Path(spec.model.source().path).name)}
    out["dtypes"] = dtype_choice(cfg, model, ids)
    del model
    out["prune"] = prune_seconds(cfg)
    fp32, bf16 = out["dtypes"]
    out["bf16_speedup"] = bf16["tokens_per_second"] / fp32["tokens_per_second"]
    out["bf16_ppl_shift"] = bf16["ppl_4x512"] / fp32["ppl_4x512"] - 1
    assert all(math.isfinite(r["seconds"]) for r in out["prune"])
    return out
