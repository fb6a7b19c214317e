"""Run the bench and write ``results/bench.md`` and ``results/bench.json``.

    python -m bench.run                 # the published setting (make bench), ~10 min on 2 CPUs
    python -m bench.run --quick         # seconds-long smoke run (tests)
    python -m bench.run --sections prune stage2 --threads 0

Offline: stories260K comes from ../shared (skipped without it); the deep model is a
random-init Llama built from a config. Timings are single-threaded by default (``--threads``)
so that the ratios do not swing with other work on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import (
    ROOT,
    SECTIONS,
    BenchConfig,
    calibration,
    clock_name,
    deep_model,
    eval_tokens,
    machine,
    resolve,
    set_threads,
    stories_model,
)
from bench.report import markdown, targets

log = logging.getLogger("bench")


def parse(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    p = argparse.ArgumentParser(description="twossp efficiency bench")
    p.add_argument("--quick", action="store_true", help="tiny seconds-long setting")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("TWOSSP_RESULTS", ROOT / "results")),
        help="folder for bench.md and bench.json (default: $TWOSSP_RESULTS or results/)",
    )
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered one")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    p.add_argument(
        "--clock",
        choices=("auto", "wall", "process"),
        default="auto",
        help="auto: process CPU time on CPU with one thread, else wall",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    a = p.parse_args(argv)
    common = dict(
        threads=a.threads,
        clock=a.clock,
        device=a.device,
        dtype=a.dtype,
        sections=tuple(a.sections),
        methods=tuple(a.methods) if a.methods else None,
    )
    cfg = BenchConfig.quick_config(**common) if a.quick else BenchConfig(**common)
    return cfg, a.out


def run(cfg: BenchConfig) -> dict:
    """All selected sections; returns the JSON-ready result (with targets)."""
    from twossp.results import git_sha

    start = time.perf_counter()
    threads = set_threads(cfg.threads)
    device, dtype = resolve(cfg)
    sections = set(cfg.sections)
    if "forward" in sections:
        sections.add("prune")  # the forward section measures the models pruning produced
    stories, tokenizer = stories_model(cfg)
    deep = deep_model(cfg)
    calib, calib_what = calibration(cfg, tokenizer, cfg.deep_vocab)
    result: dict = {"config": cfg.to_dict(), "meta": {}}

    if "prune" in sections:
        models = {"deep": (deep, calib)}
        if stories is not None:
            models = {"stories260k": (stories, calib), **models}
        else:
            log.warning("bench: ../shared/assets missing; stories260K rows skipped")
        from bench.sections import prune_times

        result["prune"], pruned = _section("prune", lambda: prune_times(cfg, models))
    if "stage2" in sections:
        from bench.sections import stage2_cache

        result["stage2"] = _section("stage2", lambda: stage2_cache(cfg, calib))
        bad = [r["blocks"] for r in result["stage2"] if not r["same_choices"]]
        if bad:
            raise AssertionError(
                f"stage-2 cache chose differently from the full-forward loop on {bad} blocks"
            )
    if "eval" in sections:
        from bench.sections import eval_overhead

        model, key = (stories, "stories260k") if stories is not None else (deep, "deep")
        ids, what = eval_tokens(cfg, tokenizer, model.config.vocab_size)
        result["eval"] = _section("eval", lambda: eval_overhead(cfg, model, ids, what))
        result["eval"]["model"] = key
    if "forward" in sections:
        from bench.sections import ALIGNED_TWOSSP, ffn_width_rounded_down, forward_costs

        deep_pruned = {m: model for (k, m), model in pruned.items() if k == "deep"}
        if "dense" not in deep_pruned:
            deep_pruned = {"dense": deep, **deep_pruned}
        else:
            deep_pruned = {"dense": deep_pruned.pop("dense"), **deep_pruned}
        if "twossp" in deep_pruned:  # is 2SSP's latency gap the kernels' dislike of its width?
            deep_pruned[ALIGNED_TWOSSP] = ffn_width_rounded_down(deep_pruned["twossp"], 8)
        result["forward"] = _section("forward", lambda: forward_costs(cfg, deep_pruned))
        for r in result["forward"]:
            r["diagnostic"] = r["method"] == ALIGNED_TWOSSP
    if "rss" in sections:
        from bench.sections import peak_rss

        result["rss"] = _section("rss", lambda: peak_rss(cfg, deep, calib))
    if "smollm2" in sections and not cfg.quick:
        from bench.smollm2 import run_section

        result["smollm2"] = _section("smollm2", lambda: run_section(cfg))

    result["meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "machine": {**machine(), "threads": threads},
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "calibration": calib_what,
        "clock": {"process": "process CPU-time", "wall": "wall"}[clock_name(cfg)],
        "memory_method": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "allocator events replayed from torch.profiler(profile_memory=True)",
        "wall_seconds": time.perf_counter() - start,
    }
    result["targets"] = targets(result)
    return result


def _section(name: str, fn):
    t0 = time.perf_counter()
    log.info("bench: section %s ...", name)
    out = fn()
    log.info("bench: section %s done in %.0fs", name, time.perf_counter() - t0)
    return out


def write(result: dict, out: Path) -> tuple[Path, Path]:
    from twossp.io import atomic_write_text

    md, js = out / "bench.md", out / "bench.json"
    atomic_write_text(js, json.dumps(result, indent=1, default=str))
    atomic_write_text(md, markdown(result))
    return md, js


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("twossp", "baselines", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg, out = parse(argv)
    result = run(cfg)
    md, js = write(result, out)
    print(md.read_text())
    print(f"[bench] wrote {md} and {js}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
