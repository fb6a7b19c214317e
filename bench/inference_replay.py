"""What pruning buys on one machine, measured fairly: every pruned model of a finished sweep,
rebuilt and timed in one process, in rounds of shuffled order, eager and compiled, beside its
FLOP ratio.

Runs of a sweep execute one after another, minutes apart, and on a shared machine the load
changes between them: a ratio of two runs' own timing rows carries that change. Here every
model of the sweep (dense included) is rebuilt in one process (its plan replayed on the base
model; SliceGPT, whose plan holds no rotations, pruned again from the run's own settings and
checked against the recorded parameter count), then timed in rounds: in each round every
model runs one prefill and one decode measurement per mode, the models (and each model's
modes) in an order drawn by a seeded RNG, so neither a change of load nor a position in the
round (first, after a larger model, ...) favours one model. A warm-up round runs first and is
not counted. A speed-up is the geometric mean over rounds of each round's dense / pruned time
ratio, with a 95% t interval on the log ratios, exp'd back: it says how well the rounds pin
the ratio down on this machine, in this process, at this thread count; it does not cover
other machines, builds, thread counts or load patterns.

Two modes (``--mode eager|compiled|both``):

- **eager**: the prefill a plain forward without cache, decoding transformers' ``generate``
  (greedy, dynamic KV cache): what the sweep's own rows time. Every module call pays Python
  and dispatch overhead, which removing a module removes but shrinking one does not.
- **compiled**: what a deployment stack removes of that overhead: the prefill a
  ``torch.compile``d forward, decoding a greedy loop over transformers' ``StaticCache`` with a
  compiled decode step (:class:`twossp.evaluation.inference.StaticGreedy`; blocks without
  attention and SliceGPT's shortcut blocks included). Compiling happens in the first calls,
  before the warm-up round; their seconds are reported apart (``compile s``) and count in no
  timing. Before timing, each compiled decoder's tokens are checked against eager greedy
  decoding (``compiled_matches_eager`` in the JSON).

Beside them the FLOP ratio of a prefill (``bench.flops.forward_flops``: linear layers, LM head
and causal attention core) says what the measured ratio would be if time followed
arithmetic; where they diverge, the cause is in what FLOPs leave out (per-block overheads
that removing an attention module does not remove, narrow matrix products running below the
throughput of wide ones, the LM head's share). The runs need no timing rows of their own.

    python -m bench.inference_replay --results results --experiment cpu_smollm2 \\
        --experiment cpu_smollm2_downstream --model smollm2_135m --out results/inference_replay
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.flops import forward_flops
from twossp.data import token_stream
from twossp.evaluation.inference import (
    StaticGreedy,
    compiled_forward,
    first_window,
    greedy_generate,
)
from twossp.evaluation.kv_cache import kv_shape
from twossp.evaluation.perplexity import t_quantile
from twossp.methods.registry import method_names
from twossp.modeling import count_params, load_model
from twossp.plan import PrunePlan
from twossp.results import members, plan_path, read_runs
from twossp.surgery import apply_plan

log = logging.getLogger(__name__)

MODES = ("eager", "compiled")
PROMPT_TOKENS = 128
WARMUP_TOKENS = 8
CONFIDENCE = 0.95
# Each mode's series in an Entry: (prefill seconds, decode tokens/s).
SERIES = {
    "eager": ("prefill_s", "decode_tps"),
    "compiled": ("compiled_prefill_s", "compiled_decode_tps"),
}


@dataclass
class Entry:
    """One model of the sweep and what was measured on it (one value per counted round)."""

    method: str
    sparsity: float
    config_hash: str
    achieved: float
    params: int
    ppl: float | None
    ppl_interval: tuple[float | None, float | None]
    model: object = None
    compiled: object = None  # (compiled prefill, StaticGreedy), not saved
    flops: float = 0.0
    kv_bytes: int = 0
    prefill_s: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    compiled_prefill_s: list[float] = field(default_factory=list)
    compiled_decode_tps: list[float] = field(default_factory=list)
    compile_s: float | None = None  # first compiled prefill + first compiled decode
    compiled_matches_eager: bool | None = None

    @property
    def label(self) -> str:
        return "dense" if self.method == "dense" else f"{self.method} {self.sparsity:.3f}"

    def saved(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("model", "compiled")}


def _run_spec(model_key: str, method: str, sparsity: float, protocol: str, experiment: str):
    """The RunSpec a sweep point was run with (composed as the command line composes it)."""
    from hydra import compose, initialize_config_dir

    from twossp.config import CONF, register_method_schemas, register_resolvers, to_run_spec

    register_resolvers()
    register_method_schemas()
    overrides = [f"experiment={experiment}"] if experiment else []
    overrides += [
        f"model={model_key}",
        f"method={method}",
        f"sparsity={sparsity}",
        f"protocol={protocol}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_spec(compose(config_name="config", overrides=overrides))


def discover(results: Path, experiments: list[str], model: str, protocol: str) -> list[Entry]:
    """The newest finished run of each (method, sparsity) in ``experiments`` (timing rows of
    its own are not needed: the replay times it)."""
    frame = read_runs(results)
    member = members(results)
    keep = frame["config_hash"].map(lambda h: bool(member.get(h, set()) & set(experiments)))
    frame = frame[keep & (frame["model"] == model) & (frame["protocol"] == protocol)]
    frame = frame.sort_values("created_at")
    entries: dict[tuple, Entry] = {}
    for h, rows in frame.groupby("config_hash", sort=False):
        row = rows.iloc[-1]
        sparsity = 0.0 if row.method == "dense" else float(row.target_sparsity)
        ppl = rows[(rows["metric"] == "ppl") & (rows["dataset"] == "wikitext2")]
        first = ppl.iloc[0] if len(ppl) else None
        entries[(row.method, sparsity)] = Entry(
            method=row.method,
            sparsity=sparsity,
            config_hash=h,
            achieved=float(row.achieved_sparsity),
            params=int(row.params_after),
            ppl=None if first is None else float(first.value),
            ppl_interval=(None, None) if first is None else (first.ci_low, first.ci_high),
        )
    order = {name: i for i, name in enumerate(method_names())}
    return sorted(entries.values(), key=lambda e: (order.get(e.method, len(order)), e.sparsity))


def rebuild(entry: Entry, base, results: Path, args) -> torch.nn.Module:
    """``entry``'s pruned model: its plan replayed, or (SliceGPT) pruned again."""
    model = copy.deepcopy(base)
    if entry.method != "dense":
        plan = PrunePlan.load(plan_path(results, entry.config_hash))
        if plan.replayable:
            apply_plan(model, plan)
        else:
            from twossp.methods import PruneContext
            from twossp.pipeline import prepare

            spec = _run_spec(args.model, entry.method, entry.sparsity, args.protocol, args.rebuild)
            ready = prepare(spec)
            method, calibration = ready.method, ready.calibration
            if args.rotation_windows is not None:  # same widths, so the same shapes and speed
                method = method.reading(args.rotation_windows)
                calibration = calibration[: args.rotation_windows]
            ctx = PruneContext(ready.target, calibration, spec.seed, progress=False)
            torch.manual_seed(spec.seed)
            method.prune(model, ctx)
    if count_params(model) != entry.params:
        raise RuntimeError(
            f"{entry.label}: rebuilt model has {count_params(model)} parameters, the run "
            f"recorded {entry.params}"
        )
    return model


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compile_entry(e: Entry, window: torch.Tensor, new_tokens: int) -> None:
    """Compile ``e``'s prefill and decode step (their first calls, timed as ``compile_s``)
    and check the compiled decoder's ``new_tokens`` tokens against eager greedy decoding."""
    prompt = window[:, :PROMPT_TOKENS]
    prefill = compiled_forward(e.model)
    decoder = StaticGreedy(e.model, prompt.shape[1] + new_tokens)
    with torch.no_grad():
        e.compile_s = _timed(lambda: prefill(window)) + _timed(lambda: decoder.generate(prompt, 2))
    tokens, _ = decoder.generate(prompt, new_tokens)
    eager = greedy_generate(e.model, prompt, new_tokens).sequences
    e.compiled_matches_eager = tokens.tolist() == eager.tolist()
    if not e.compiled_matches_eager:
        log.warning("%s: compiled greedy decoding differs from eager", e.label)
    e.compiled = (prefill, decoder)


@torch.no_grad()
def measure(e: Entry, mode: str, window: torch.Tensor, new_tokens: int) -> None:
    """One prefill and one decode measurement of ``e`` in ``mode``, appended to its series."""
    prompt = window[:, :PROMPT_TOKENS]
    prefill_name, decode_name = SERIES[mode]
    if mode == "eager":
        prefill_s = _timed(lambda: e.model(input_ids=window, use_cache=False))
        one = _timed(lambda: greedy_generate(e.model, prompt, 1))
        full = _timed(lambda: greedy_generate(e.model, prompt, new_tokens))
        decode_s = full - one
    else:
        prefill, decoder = e.compiled
        prefill_s = _timed(lambda: prefill(window))
        decode_s = decoder.generate(prompt, new_tokens)[1]
    getattr(e, prefill_name).append(prefill_s)
    getattr(e, decode_name).append((new_tokens - 1) / decode_s)


def measure_round(
    entries: list[Entry], window: torch.Tensor, new_tokens: int, modes: list[str], rng
) -> list[str]:
    """Every model once per mode, models (and each model's modes) in an order drawn from
    ``rng``; returns the order run, as ``label:mode``."""
    order = []
    for e in rng.sample(entries, len(entries)):
        for mode in rng.sample(modes, len(modes)):
            measure(e, mode, window, new_tokens)
            order.append(f"{e.label}:{mode}")
    return order


def ratios(entries: list[Entry], e: Entry, series: str, invert: bool) -> list[float]:
    """Each round's dense / pruned ratio of ``series`` (pruned / dense with ``invert``)."""
    dense = next(d for d in entries if d.method == "dense")
    pairs = zip(getattr(dense, series), getattr(e, series), strict=True)
    return [(b / a) if invert else (a / b) for a, b in pairs]


def geometric_interval(
    values: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None]:
    """(geometric mean, low, high) of positive ``values``: the t interval of the mean of their
    logs, exp'd back; no interval from fewer than two values."""
    logs = [math.log(v) for v in values]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), None, None
    half = t_quantile((1 + confidence) / 2, len(logs) - 1) * statistics.stdev(logs)
    half /= math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def _speedup(entries: list[Entry], e: Entry, series: str, invert: bool) -> str:
    r = ratios(entries, e, series, invert)
    if not r:
        return ""
    mean, low, high = geometric_interval(r)
    return f"{mean:.2f}" if low is None else f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _median(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{scale * statistics.median(values):.{digits}f}" if values else "-"


def table(entries: list[Entry], meta: dict) -> str:
    """The Markdown table of a replay, its caption first (columns for the modes measured)."""
    modes = meta.get("modes", ["eager"])  # replays saved before the compiled mode: eager only
    dense = next(d for d in entries if d.method == "dense")
    both = "/".join(modes)
    head = ["method", "sparsity (achieved)", "params", "FLOP ratio"]
    head += [f"{phase} speed-up {mode}" for phase in ("prefill", "decode") for mode in modes]
    head += [f"prefill ms ({both})", f"decode tok/s ({both})"]
    head += ["compile s"] if "compiled" in modes else []
    head += ["KV bytes/token (saved)", "WikiText-2 ppl [95%]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        low, high = e.ppl_interval
        ppl = "" if e.ppl is None else f"{e.ppl:.1f}"
        if ppl and low is not None and low == low:
            ppl += f" [{low:.1f}, {high:.1f}]"
        prefill = [SERIES[m][0] for m in modes]
        decode = [SERIES[m][1] for m in modes]
        row = [
            e.method,
            f"{e.sparsity:.3f} ({e.achieved:.3f})",
            f"{e.params / 1e6:.1f}M",
            f"{dense.flops / e.flops:.2f}",
        ]
        row += [_speedup(entries, e, s, invert=False) for s in prefill]
        row += [_speedup(entries, e, s, invert=True) for s in decode]
        row += [" / ".join(_median(getattr(e, s), 1000) for s in prefill)]
        row += [" / ".join(_median(getattr(e, s), digits=1) for s in decode)]
        if "compiled" in modes:
            row += ["" if e.compile_s is None else f"{e.compile_s:.0f}"]
        row += [f"{e.kv_bytes:,} ({100 * (1 - e.kv_bytes / dense.kv_bytes):.0f}%)", ppl]
        lines.append("| " + " | ".join(row) + " |")
    return _caption(meta, modes) + "\n\n" + "\n".join(lines) + "\n"


def _paired_mode_ratio(entries: list[Entry], e: Entry, phase: int) -> tuple:
    """Each round's compiled speed-up / eager speed-up of ``e`` for prefill (``phase`` 0) or
    decode (1): both modes ran in every round, so the rounds pair them."""
    invert = phase == 1
    eager = ratios(entries, e, SERIES["eager"][phase], invert)
    compiled = ratios(entries, e, SERIES["compiled"][phase], invert)
    return geometric_interval([c / a for a, c in zip(eager, compiled, strict=True)])


def overhead_table(entries: list[Entry], meta: dict) -> str:
    """What compiling does to each pruned model's shortfall against its FLOP ratio: the
    per-module overhead a deployment stack removes (both modes measured in every round)."""
    if set(meta.get("modes", [])) != set(MODES):
        return ""
    dense = next(d for d in entries if d.method == "dense")
    head = [
        "method",
        "phase",
        "FLOP ratio",
        "speed-up eager",
        "speed-up compiled",
        "compiled / eager [95%]",
        "shortfall eager",
        "shortfall compiled",
        "shortfall removed by compiling",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in (e for e in entries if e.method != "dense"):
        flop = dense.flops / e.flops
        for phase, name in enumerate(("prefill", "decode")):
            invert = phase == 1
            eager = geometric_interval(ratios(entries, e, SERIES["eager"][phase], invert))[0]
            compiled = geometric_interval(ratios(entries, e, SERIES["compiled"][phase], invert))[0]
            mean, low, high = _paired_mode_ratio(entries, e, phase)
            paired = f"{mean:.3f}" if low is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]"
            short_e, short_c = 1 - eager / flop, 1 - compiled / flop
            if low is None or low <= 1 <= high:
                removed = "not told apart from noise"
            elif short_e <= 0:
                removed = "no shortfall eager"
            else:
                removed = f"{100 * (short_e - short_c) / short_e:.0f}%"
            lines.append(
                f"| {e.method} | {name} | {flop:.2f} | {eager:.2f} | {compiled:.2f} | {paired} | "
                f"{100 * short_e:.1f}% | {100 * short_c:.1f}% | {removed} |"
            )
    caption = (
        "What compiling removes of each model's shortfall against its FLOP ratio. Shortfall: "
        "1 - speed-up / FLOP ratio (the share of the arithmetic saving that the clock does not "
        "show; negative: faster than arithmetic). compiled / eager: the geometric mean over "
        "rounds of each round's compiled speed-up / eager speed-up (both modes ran in every "
        "round, so the rounds pair them) with its 95% t interval; an interval that holds 1 "
        "cannot tell compiling's effect from round-to-round noise, and no share removed is "
        "given. Shortfall removed: (shortfall eager - shortfall compiled) / shortfall eager."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def _caption(meta: dict, modes: list[str]) -> str:
    if "seed" in meta:
        order = (
            f"in each round the models (and each model's modes) ran in an order shuffled with "
            f"seed {meta['seed']}"
        )
        speedup = (
            "speed-ups: geometric mean over rounds of each round's dense / pruned time ratio "
            "[95% t interval on the log ratios: the spread between rounds on this machine and "
            "process, not between machines, builds or thread counts]"
        )
    else:  # replays saved before the shuffled design: dense first, median ratios re-rendered
        order = "in each round the models ran in registry order, dense first"
        speedup = (
            "speed-ups: geometric mean over rounds of each round's dense / pruned time ratio "
            "[95% t interval on the log ratios]"
        )
    when = f"Measured {meta['date']}: " if meta.get("date") else ""
    text = when + (
        f"{meta['model']}, protocol={meta['protocol']}, {meta['device']} {meta['dtype']}, "
        f"{meta['threads']} thread(s), prefill of {meta['seqlen']} tokens, greedy decode of "
        f"{meta['new_tokens']} tokens after {PROMPT_TOKENS} (batch 1, KV cache; tok/s of the "
        f"steps after the first new token); {meta['rounds']} rounds after a warm-up round that "
        f"is not counted; {order}; absolute figures: medians over rounds; {speedup}; FLOP "
        "ratio = dense / pruned FLOPs of the prefill."
    )
    if meta.get("rotation_windows"):
        text += (
            f" SliceGPT was rebuilt for timing from its first {meta['rotation_windows']} "
            "calibration windows: its widths, parameter count and FLOPs are the run's (checked), "
            "its rotations are not, which no timing sees; its perplexity is the run's own."
        )
    if "compiled" in modes:
        text += (
            " eager: PyTorch eager, transformers' generate (dynamic KV cache); compiled: "
            "torch.compile (inductor, default mode) of the prefill forward and of one decode "
            "step over a static KV cache (prompt prefilled eagerly); compile s: the compiled "
            "prefill's and decoder's first calls, compile included, counted in no timing."
        )
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--experiment", action="append", required=True)
    p.add_argument("--model", default="smollm2_135m")
    p.add_argument("--protocol", default="paper")
    p.add_argument(
        "--rebuild",
        default="cpu_smollm2",
        help="experiment overlay the sweep ran with ('' for none): SliceGPT is pruned again "
        "with its settings",
    )
    p.add_argument(
        "--rotation-windows",
        type=_positive,
        default=None,
        help="rebuild a rotation method (SliceGPT) from only its first N calibration windows: "
        "its widths come from the sparsity, so the shapes, FLOPs and speed are the run's while "
        "its rotations (which timing does not see) differ; default: all the run read",
    )
    p.add_argument(
        "--mode",
        choices=["eager", "compiled", "both"],
        default="both",
        help="eager PyTorch, torch.compile with a static KV cache, or both side by side",
    )
    p.add_argument("--rounds", type=_positive, default=10, help="counted rounds (after a warm-up)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order shuffled every round")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--render",
        action="store_true",
        help="only re-render <out>/inference_replay.md from the saved <out>/inference_replay.json",
    )
    return p


def document(entries: list[Entry], meta: dict) -> str:
    """The replay's Markdown: the speed-up table, then (both modes) the overhead table."""
    overhead = overhead_table(entries, meta)
    return table(entries, meta) + ("\n" + overhead if overhead else "")


def rendered(out: Path) -> str:
    """The Markdown of the replay saved in ``out``/inference_replay.json (nothing written)."""
    saved = json.loads((Path(out) / "inference_replay.json").read_text())
    order = {name: i for i, name in enumerate(method_names())}
    entries = [Entry(**{**m, "ppl_interval": tuple(m["ppl_interval"])}) for m in saved["models"]]
    entries.sort(key=lambda e: (order.get(e.method, len(order)), e.sparsity))
    return document(entries, saved["meta"])


def render(out: Path) -> str:
    """Re-render ``out``/inference_replay.md from the saved JSON."""
    text = rendered(out)
    (out / "inference_replay.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.render:
        print(render(args.out))
        return
    if args.new_tokens < 2:
        raise SystemExit(
            f"--new-tokens must be >= 2 (decode steps after the first token), got {args.new_tokens}"
        )
    modes = list(MODES) if args.mode == "both" else [args.mode]
    logging.basicConfig(level=logging.INFO, format="[inference_replay] %(message)s")
    torch.set_num_threads(args.threads)

    entries = discover(args.results, args.experiment, args.model, args.protocol)
    if not any(e.method == "dense" for e in entries):
        raise SystemExit(f"no finished dense run of {args.model} in {args.experiment}")
    spec = _run_spec(args.model, "dense", 0.375, args.protocol, args.rebuild)
    base, tokenizer = load_model(spec.model)
    seqlen = min(spec.eval.seqlen, base.config.max_position_embeddings)
    if PROMPT_TOKENS + args.new_tokens > base.config.max_position_embeddings:
        raise SystemExit(
            f"--new-tokens {args.new_tokens} after {PROMPT_TOKENS} exceeds the context"
        )
    streams = {ds.name: token_stream(tokenizer, ds, seqlen)[0] for ds in spec.eval.datasets}
    window, source = first_window(streams, seqlen, base.config.vocab_size)
    window = window.reshape(1, -1)
    for e in entries:
        e.model = rebuild(e, base, args.results, args).eval()
        e.flops = forward_flops(e.model, 1, seqlen).total
        e.kv_bytes = kv_shape(e.model).bytes_per_token
        log.info("rebuilt %s (%d parameters)", e.label, e.params)
    del base
    if "compiled" in modes:
        from torch._dynamo import config as dynamo_config

        dynamo_config.fail_on_recompile_limit_hit = True  # never fall back to eager silently
        for e in entries:
            compile_entry(e, window, args.new_tokens)
            log.info("compiled %s: %.0f s", e.label, e.compile_s)
    rng = random.Random(args.seed)
    measure_round(entries, window, min(WARMUP_TOKENS, args.new_tokens), modes, rng)  # warm-up
    for e in entries:
        for name in (n for m in modes for n in SERIES[m]):
            getattr(e, name).clear()
    orders = []
    for r in range(args.rounds):
        start = time.perf_counter()
        orders.append(measure_round(entries, window, args.new_tokens, modes, rng))
        log.info("round %d/%d: %.0f s", r + 1, args.rounds, time.perf_counter() - start)
    meta = {
        "model": args.model,
        "protocol": args.protocol,
        "device": "cpu",
        "dtype": str(next(entries[0].model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seqlen": seqlen,
        "source": source,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "modes": modes,
        "seed": args.seed,
        "confidence": CONFIDENCE,
        "orders": orders,
        "rotation_windows": args.rotation_windows,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = document(entries, meta)
    (args.out / "inference_replay.md").write_text(text)
    (args.out / "inference_replay.json").write_text(
        json.dumps({"meta": meta, "models": [e.saved() for e in entries]}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()
