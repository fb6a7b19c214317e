"""The bench measurements. Each returns plain dicts (JSON-ready); :mod:`bench.report` formats.

1. :func:`prune_times`: wall time of every registered method on each model.
2. :func:`stage2_cache`: 2SSP stage 2 from cached block inputs vs. the full-forward loop, over
   several depths (same choices asserted).
3. :func:`eval_overhead`: :func:`twossp.evaluation.perplexity.perplexity` vs. a bare forward
   loop over the same windows.
4. :func:`forward_costs`: latency and peak memory of each pruned model against the dense one,
   next to the parameter and FLOP ratios.
5. :func:`peak_rss`: peak resident memory of a whole load + prune run in a fresh process.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from bench.common import ROOT, BenchConfig, clock_name, deep_model, now, resolve
from bench.flops import forward_flops
from twossp import sparsity as sp
from twossp.adapters import get_adapter
from twossp.devices import input_device
from twossp.evaluation.costs import forward_fn, peak_call_memory, time_interleaved, weight_bytes
from twossp.evaluation.perplexity import perplexity, windows
from twossp.methods import METHODS, PruneContext, build_method
from twossp.modeling import count_params

log = logging.getLogger("bench")


# --- 1. pruning time ------------------------------------------------------------------------


def _method_settings(name: str, cfg: BenchConfig, model_key: str) -> dict:
    """Default settings, except EvoPress on the deep model, which is capped (extrapolated)."""
    if name == "evopress" and model_key == "deep":
        return {
            "max_generations": cfg.evopress_generations,
            "initially_generated": cfg.evopress_initial,
        }
    return {}


def _evopress_estimate(model: nn.Module, target: float, measured_s: float, info: dict) -> dict:
    """Full-run EvoPress time from the measured cost per fitness evaluation.

    A full run scores ``initially_generated`` random configurations and then ``offspring``
    new ones per generation (parents are memoised: with the calibration pool smaller than
    the token budgets every step scores the same windows). Every evaluation runs the same
    windows through the same depth, so the cost per evaluation carries over.
    """
    full = build_method("evopress")
    n_blocks = get_adapter(model).num_blocks
    k = full.units_to_remove(model, target)
    generations = full.n_generations(n_blocks, k)
    evaluations = full.initially_generated + generations * full.offspring
    per_eval = measured_s / max(info.get("evaluations", 1), 1)
    return {
        "estimated_seconds": per_eval * evaluations,
        "estimated_evaluations": evaluations,
        "estimated_generations": generations,
        "measured_evaluations": info.get("evaluations"),
        "measured_generations": info.get("generations"),
        "seconds_per_evaluation": per_eval,
    }


def candidate_evaluations(name: str, n_blocks: int, info: dict) -> int | None:
    """Calibration-NLL evaluations a greedy search made (one per candidate per step).

    2SSP stage 2 scores every remaining attention at each of its steps; BlockPruner scores
    every remaining attention and MLP. Read back from the plan's record of the removals.
    """
    if name == "twossp" and "attention_order" in info:
        return sum(n_blocks - t for t in range(len(info["attention_order"])))
    if name == "blockpruner" and "order" in info:
        return sum(2 * n_blocks - t for t in range(len(info["order"])))
    return None


def prune_times(
    cfg: BenchConfig, models: dict[str, tuple[nn.Module, torch.Tensor]]
) -> tuple[list[dict], dict[tuple[str, str], nn.Module]]:
    """Prune a copy of each model with every registered method; time each run.

    Returns:
        One row per (model, method) and the pruned models keyed by (model key, method).
    """
    tick = now(cfg)
    names = list(cfg.methods or METHODS)
    rows, pruned = [], {}
    for key, (model, calib) in models.items():
        for name in names:
            row = {"model": key, "method": name}
            rows.append(row)
            settings = _method_settings(name, cfg, key)
            try:
                method = build_method(name, **settings)
                target = cfg.sparsity if method.uses_sparsity else 0.0
                work = copy.deepcopy(model)
                method.check(work, target)
            except Exception as exc:  # a method not importable here, or not applicable
                row["skipped"] = f"{type(exc).__name__}: {exc}"
                log.warning("bench: %s on %s skipped (%s)", name, key, row["skipped"])
                continue
            before = sp.count(work)
            t0 = tick()
            plan = method.prune(work, PruneContext(target, calib, seed=0, progress=False))
            seconds = tick() - t0
            after = sp.count(work)
            row.update(
                seconds=seconds,
                settings=settings,
                achieved_sparsity=sp.measure(before, after),
                params_after=after.total,
            )
            if name == "evopress" and settings:
                row.update(_evopress_estimate(model, target, seconds, plan.info))
            evaluations = candidate_evaluations(name, get_adapter(model).num_blocks, plan.info)
            if evaluations is not None:
                row["candidate_evaluations"] = evaluations
            log.info("bench: prune %-11s on %-11s %8.2fs", name, key, seconds)
            pruned[(key, name)] = work
    return rows, pruned


def full_run_seconds(row: dict) -> float | None:
    """A method's pruning time: measured, or the estimate for a capped run."""
    if "skipped" in row:
        return None
    return row.get("estimated_seconds", row["seconds"])


# --- 2. 2SSP stage 2: cache vs full forward -------------------------------------------------


def stage2_cache(cfg: BenchConfig, calib: torch.Tensor) -> list[dict]:
    """Stage 2 both ways on stage-1-pruned models of several depths; same choices asserted."""
    from twossp.methods.twossp import TwoSSP, prune_ffn, stage2_attention

    tick = now(cfg)
    rows = []
    for n_blocks in cfg.stage2_blocks:
        model = deep_model(cfg, n_blocks=n_blocks)
        method = TwoSSP()
        budget = method.budget(model, cfg.sparsity)
        prune_ffn(get_adapter(model), calib, budget.ffn_keep, progress=False)
        samples = calib[: method.n_calib_stage2]
        row = {
            "blocks": n_blocks,
            "n_attn": budget.n_attn,
            "samples": len(samples),
            "seqlen": samples.shape[1],
        }
        for use_cache in (False, True):
            work = copy.deepcopy(model) if not use_cache else model  # the last run may consume it
            t0 = tick()
            order = stage2_attention(
                get_adapter(work), samples, budget.n_attn, use_cache, progress=False
            )
            seconds = tick() - t0
            tag = "cached" if use_cache else "naive"
            row[f"{tag}_seconds"], row[f"{tag}_order"] = seconds, order
        row["speedup"] = row["naive_seconds"] / row["cached_seconds"]
        row["same_choices"] = row["naive_order"] == row["cached_order"]
        # Blocks run per candidate: naive N, cached N - i (+ head). Sum over the greedy steps.
        naive_runs = cached_runs = 0
        present = list(range(n_blocks))
        for removed in row["cached_order"]:
            naive_runs += len(present) * n_blocks
            cached_runs += sum(n_blocks - i for i in present) + (n_blocks - removed)
            present.remove(removed)
        row["ideal_speedup"] = naive_runs / cached_runs
        log.info(
            "bench: stage 2 on %d blocks: naive %.2fs, cached %.2fs (x%.2f)",
            n_blocks,
            row["naive_seconds"],
            row["cached_seconds"],
            row["speedup"],
        )
        rows.append(row)
    return rows


def scaling_exponent(rows: list[dict], key: str = "cached_seconds") -> float | None:
    """Slope of log(time) against log(blocks) between the shallowest and deepest model."""
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return math.log(b[key] / a[key]) / math.log(b["blocks"] / a["blocks"])


# --- 3. perplexity harness overhead ---------------------------------------------------------


def eval_overhead(cfg: BenchConfig, model: nn.Module, ids: torch.Tensor, what: str) -> dict:
    """Throughput of :func:`perplexity` against ``model(x)`` on the same windows."""
    device = input_device(model)
    chunks = windows(ids, cfg.eval_seqlen, cfg.eval_windows)
    bs = cfg.eval_batch

    def harness():
        perplexity(model, chunks.reshape(-1), cfg.eval_seqlen, bs, progress=False)

    def bare():
        with torch.no_grad():
            for start in range(0, len(chunks), bs):
                model(input_ids=chunks[start : start + bs].to(device), use_cache=False)

    timing = time_interleaved(
        {"perplexity": harness, "bare": bare},
        device,
        warmup=1,
        repeats=cfg.eval_repeats,
        clock=clock_name(cfg),
    )
    tokens = chunks.numel()
    h, b = timing["perplexity"].median, timing["bare"].median
    return {
        "tokens": tokens,
        "windows": len(chunks),
        "seqlen": cfg.eval_seqlen,
        "batch": bs,
        "data": what,
        "perplexity_seconds": h,
        "bare_seconds": b,
        "perplexity_tok_s": tokens / h,
        "bare_tok_s": tokens / b,
        "overhead": h / b - 1,
        "spread": max(timing["perplexity"].spread, timing["bare"].spread),
    }


# --- 4. forward latency and memory of pruned models -----------------------------------------

ALIGNED_TWOSSP = "twossp (FFN width rounded down to x8)"


def ffn_width_rounded_down(model: nn.Module, multiple: int) -> nn.Module:
    """A copy of ``model`` whose FFN widths are cut to the multiple of ``multiple`` below.

    A latency diagnostic only: it keeps each block's first neurons (no scores), so its
    perplexity means nothing; its FLOPs and time show what the kernels make of an aligned
    width at nearly the same size.
    """
    out = copy.deepcopy(model)
    adapter = get_adapter(out)
    for i in range(adapter.num_blocks):
        width = adapter.ffn_width(i)
        aligned = max(multiple, width - width % multiple)
        if aligned < width:
            adapter.keep_ffn_neurons(i, torch.arange(aligned))
    return out


def forward_costs(cfg: BenchConfig, pruned: dict[str, nn.Module]) -> list[dict]:
    """Latency and peak memory of every pruned model vs. the dense one (first key: dense)."""
    device, _ = resolve(cfg)
    g = torch.Generator().manual_seed(2)
    vocab = next(iter(pruned.values())).config.vocab_size
    ids = torch.randint(3, vocab, (cfg.latency_batch, cfg.latency_seqlen), generator=g)
    fns = {name: forward_fn(m, ids) for name, m in pruned.items()}
    timing = time_interleaved(
        fns, device, warmup=cfg.warmup, repeats=cfg.repeats, clock=clock_name(cfg)
    )
    rows = []
    for name, m in pruned.items():
        flops = forward_flops(m, cfg.latency_batch, cfg.latency_seqlen)
        rows.append(
            {
                "method": name,
                "params": count_params(m),
                "weight_bytes": weight_bytes(m),
                "flops": flops.total,
                "attention_flops": flops.attention,
                "latency_s": timing[name].median,
                "latency_times": timing[name].times,
                "activation_peak_bytes": peak_call_memory(fns[name], device),
            }
        )
    dense = rows[0]
    for r in rows:
        r["param_ratio"] = r["params"] / dense["params"]
        r["flop_ratio"] = r["flops"] / dense["flops"]
        r["latency_ratio"] = r["latency_s"] / dense["latency_s"]
        r["latency_vs_ideal"] = r["latency_ratio"] / r["flop_ratio"]
        r["peak_bytes"] = r["weight_bytes"] + r["activation_peak_bytes"]
        r["memory_ratio"] = r["peak_bytes"] / dense["peak_bytes"]
        r["weight_ratio"] = r["weight_bytes"] / dense["weight_bytes"]
    return rows


# --- 5. peak resident memory of a whole pruning run -----------------------------------------


def peak_rss(cfg: BenchConfig, model: nn.Module, calib: torch.Tensor) -> dict:
    """Save ``model``, then load and prune it with 2SSP in a fresh process (bench.peak_rss)."""
    device, _ = resolve(cfg)
    with tempfile.TemporaryDirectory(prefix="twossp-bench-") as tmp:
        model_dir = Path(tmp) / "model"
        model.save_pretrained(model_dir)
        calib_file = Path(tmp) / "calib.pt"
        torch.save(calib.cpu(), calib_file)
        cmd = [
            sys.executable,
            "-m",
            "bench.peak_rss",
            "--model",
            str(model_dir),
            "--calib",
            str(calib_file),
            "--sparsity",
            str(cfg.sparsity),
            "--threads",
            str(cfg.threads),
            "--device",
            str(device),
            "--dtype",
            cfg.dtype,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.peak_rss failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
