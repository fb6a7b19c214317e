"""Targets and the markdown report of a bench run."""

from __future__ import annotations

from bench.sections import full_run_seconds, scaling_exponent

STAGE2_SPEEDUP = 1.7  # stage-2 cache vs full forward, on the deepest model
EVAL_OVERHEAD = 0.10  # perplexity() vs bare forward loop
LATENCY_TOLERANCE = 0.15  # pruned / dense latency within 15 % of the FLOP ratio
PRUNE_SPEEDUP = 10.0  # 2SSP vs BlockPruner and EvoPress


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def targets(result: dict) -> list[dict]:
    """Each target with its figure and whether it is met (None: not measured)."""
    out = []
    stage2 = result.get("stage2")
    if stage2:
        deepest = stage2[-1]
        out.append(
            {
                "target": f"stage-2 cache >= {STAGE2_SPEEDUP}x faster ({deepest['blocks']} blocks)",
                "figure": f"{deepest['speedup']:.2f}x (same choices: {deepest['same_choices']})",
                "met": deepest["speedup"] >= STAGE2_SPEEDUP and deepest["same_choices"],
            }
        )
    ev = result.get("eval")
    if ev:
        out.append(
            {
                "target": f"perplexity() overhead < {EVAL_OVERHEAD:.0%} vs bare forward loop",
                "figure": f"{ev['overhead']:+.1%}",
                "met": ev["overhead"] < EVAL_OVERHEAD,
            }
        )
    fwd = result.get("forward")
    if fwd:
        for r in fwd[1:]:
            if r.get("diagnostic"):
                continue
            dev = r["latency_vs_ideal"] - 1
            out.append(
                {
                    "target": f"{r['method']}: latency ratio within "
                    f"{LATENCY_TOLERANCE:.0%} of FLOP ratio",
                    "figure": f"{r['latency_ratio']:.3f} vs {r['flop_ratio']:.3f} ({dev:+.1%})",
                    "met": abs(dev) <= LATENCY_TOLERANCE,
                }
            )
    prune = result.get("prune")
    if prune:
        deep = {r["method"]: r for r in prune if r["model"] == "deep"}
        twossp = full_run_seconds(deep.get("twossp", {"skipped": ""}))
        for other in ("blockpruner", "evopress"):
            theirs = full_run_seconds(deep.get(other, {"skipped": ""}))
            if twossp is None or theirs is None:
                out.append(
                    {
                        "target": f"2SSP >= {PRUNE_SPEEDUP:.0f}x faster than {other}",
                        "figure": "not measured",
                        "met": None,
                    }
                )
                continue
            est = " (estimated full run)" if "estimated_seconds" in deep[other] else ""
            out.append(
                {
                    "target": f"2SSP >= {PRUNE_SPEEDUP:.0f}x faster than {other} (deep model)",
                    "figure": f"{theirs / twossp:.1f}x{est}",
                    "met": theirs / twossp >= PRUNE_SPEEDUP,
                }
            )
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(result: dict) -> str:
    cfg, meta = result["config"], result["meta"]
    lines = [
        "# twossp bench",
        "",
        f"{meta['date']}, git {meta['git_sha']}, {meta['machine']['cpu_count']} CPUs, "
        f"torch {meta['machine']['torch']}, {meta['machine']['threads']} thread(s), "
        f"{meta['clock']} clock, load {meta['machine'].get('load_avg_1m', 0):.1f} at start, "
        f"device {meta['device']}, dtype {meta['dtype']}, wall {meta['wall_seconds']:.0f}s.",
        f"Deep model: random-init Llama, {cfg['deep_blocks']} blocks, hidden {cfg['deep_hidden']}, "
        f"intermediate {cfg['deep_intermediate']}, vocab {cfg['deep_vocab']}, context "
        f"{cfg['deep_context']}. Sparsity {cfg['sparsity']}. Calibration for every method: "
        f"{meta['calibration']}.",
        "Each figure is a ratio of two things measured in this run; timings that are compared "
        "are taken round-robin (medians) so a background load hits both sides.",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "figure", "met"],
        [
            [t["target"], t["figure"], {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]]
            for t in result["targets"]
        ],
    )
    if result.get("prune"):
        lines += ["", "## Pruning time", ""]
        rows = []
        for r in result["prune"]:
            if "skipped" in r:
                rows.append([r["model"], r["method"], "skipped", "", "", r["skipped"][:80]])
                continue
            note = ""
            if "candidate_evaluations" in r:
                note = f"{r['candidate_evaluations']} candidate NLL evaluations"
            if "estimated_seconds" in r:
                note = (
                    f"{r['measured_generations']} gen / {r['measured_evaluations']} evals "
                    f"measured; full run ({r['estimated_generations']} gen, "
                    f"{r['estimated_evaluations']} evals) estimated at "
                    f"{r['estimated_seconds']:.0f}s"
                )
            rows.append(
                [
                    r["model"],
                    r["method"],
                    f"{r['seconds']:.2f}",
                    f"{r['achieved_sparsity']:.3f}",
                    r["params_after"],
                    note,
                ]
            )
        lines += _table(["model", "method", "seconds", "achieved", "params after", "note"], rows)
        for key in ("stories260k", "deep"):
            by = {r["method"]: full_run_seconds(r) for r in result["prune"] if r["model"] == key}
            if by.get("twossp"):
                ratios = ", ".join(
                    f"{m} {s / by['twossp']:.1f}x"
                    for m, s in by.items()
                    if s is not None and m not in ("twossp", "dense")
                )
                lines += ["", f"Pruning time / 2SSP's on {key}: {ratios}."]
                evals = {
                    r["method"]: r.get("candidate_evaluations")
                    for r in result["prune"]
                    if r["model"] == key
                }
                if evals.get("twossp") and evals.get("blockpruner"):
                    lines += [
                        "",
                        f"Both greedy searches use the same cached scorer; BlockPruner makes "
                        f"{evals['blockpruner'] / evals['twossp']:.1f}x as many candidate "
                        f"evaluations as 2SSP stage 2 on {key}.",
                    ]
    if result.get("stage2"):
        lines += ["", "## 2SSP stage 2: cached block inputs vs full forward", ""]
        lines += _table(
            [
                "blocks",
                "attention removed",
                "naive s",
                "cached s",
                "speedup",
                "ideal (block runs)",
                "same choices",
            ],
            [
                [
                    r["blocks"],
                    r["n_attn"],
                    f"{r['naive_seconds']:.2f}",
                    f"{r['cached_seconds']:.2f}",
                    f"{r['speedup']:.2f}x",
                    f"{r['ideal_speedup']:.2f}x",
                    r["same_choices"],
                ]
                for r in result["stage2"]
            ],
        )
        exp = scaling_exponent(result["stage2"])
        if exp is not None:
            lines += [
                "",
                f"Cached stage-2 time grows as blocks^{exp:.2f} (removals grow with N, "
                "each scores ~N candidates over ~N/2 blocks: ~N^3 block runs).",
            ]
    if result.get("eval"):
        e = result["eval"]
        lines += ["", "## Perplexity harness overhead", ""]
        lines += _table(
            [
                "data",
                "windows x seqlen",
                "batch",
                "perplexity() tok/s",
                "bare model(x) tok/s",
                "overhead",
            ],
            [
                [
                    f"{e['model']}, {e['data']}",
                    f"{e['windows']} x {e['seqlen']}",
                    e["batch"],
                    f"{e['perplexity_tok_s']:.0f}",
                    f"{e['bare_tok_s']:.0f}",
                    f"{e['overhead']:+.1%}",
                ]
            ],
        )
    if result.get("forward"):
        f0 = result["forward"][0]
        lines += [
            "",
            "## Forward cost of pruned models (deep model, batch "
            f"{cfg['latency_batch']}, {cfg['latency_seqlen']} tokens)",
            "",
        ]
        lines += _table(
            [
                "method",
                "params",
                "param ratio",
                "FLOP ratio",
                "latency s",
                "latency ratio",
                "latency / FLOP ratio",
                "peak MiB",
                "memory ratio",
            ],
            [
                [
                    r["method"],
                    r["params"],
                    f"{r['param_ratio']:.3f}",
                    f"{r['flop_ratio']:.3f}",
                    f"{r['latency_s']:.3f}",
                    f"{r['latency_ratio']:.3f}",
                    f"{r['latency_vs_ideal']:.3f}",
                    _mib(r["peak_bytes"]),
                    f"{r['memory_ratio']:.3f}",
                ]
                for r in result["forward"]
            ],
        )
        lines += [
            "",
            f"Peak memory = weights + peak bytes allocated during the forward "
            f"({result['meta']['memory_method']}); dense: weights "
            f"{_mib(f0['weight_bytes'])} MiB + activations "
            f"{_mib(f0['activation_peak_bytes'])} MiB.",
        ]
    if result.get("rss"):
        r = result["rss"]
        lines += ["", "## Peak resident memory of a 2SSP run (fresh process: load + prune)", ""]
        lines += _table(
            [
                "weights MiB",
                "runtime RSS MiB",
                "after load MiB",
                "peak while pruning MiB",
                "peak while loading MiB",
                "(peak - runtime) / weights",
                "(peak - loaded) / weights",
            ],
            [
                [
                    _mib(r["weight_bytes"]),
                    _mib(r["rss_runtime"]),
                    _mib(r["rss_loaded"]),
                    _mib(r["prune_peak_rss"]),
                    _mib(r["load_peak_rss"]),
                    f"{(r['prune_peak_rss'] - r['rss_runtime']) / r['weight_bytes']:.2f}",
                    f"{(r['prune_peak_rss'] - r['rss_loaded']) / r['weight_bytes']:.2f}",
                ]
            ],
        )
        lines += [
            "",
            "Runtime = RSS after imports and a warm-up on a miniature model (code, kernels). "
            "safetensors are memory-mapped, so weights enter RSS as they are first touched "
            "(during pruning); (peak - runtime) / weights is the headline figure.",
        ]
        if r.get("cuda_peak_bytes"):
            lines += ["", f"CUDA peak while pruning: {_mib(r['cuda_peak_bytes'])} MiB."]
    if result.get("smollm2"):
        lines += _smollm2(result["smollm2"])
    return "\n".join(lines) + "\n"


def _smollm2(r: dict) -> list[str]:
    lines = ["", f"## SmolLM2-135M ({r['model']}, 30 blocks)", ""]
    lines += _table(
        [
            "dtype",
            "matmul GFLOP/s (512x576x1536)",
            "forward tok/s (512 tokens)",
            "FLOP-limit tok/s",
            "achieved / limit",
            "ppl, 4 WikiText-2 windows",
        ],
        [
            [
                d["dtype"],
                f"{d['matmul_gflops']:.1f}",
                f"{d['tokens_per_second']:.0f}",
                f"{d['flop_limit_tokens_per_second']:.0f}",
                f"{d['tokens_per_second'] / d['flop_limit_tokens_per_second']:.2f}",
                f"{d['ppl_4x512']:.3f}",
            ]
            for d in r["dtypes"]
        ],
    )
    lines += [
        "",
        f"bfloat16 vs float32: {r['bf16_speedup']:.2f}x the forward speed, perplexity "
        f"{r['bf16_ppl_shift']:+.2%}. The FLOP limit is the forward's FLOPs at the matmul "
        "throughput measured above.",
        "",
        "Pruning at 37.5% with the `cpu_smollm2` experiment's settings (`protocol=paper`; "
        "calibration read before the clock starts):",
        "",
    ]
    lines += _table(
        ["method", "seconds", "achieved sparsity", "calibration ids"],
        [
            [p["method"], f"{p['seconds']:.1f}", f"{p['achieved_sparsity']:.3f}", p["calibration"]]
            for p in r["prune"]
        ],
    )
    return lines
