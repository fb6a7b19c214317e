"""What pruning buys on one machine, measured fairly: every pruned model of a finished sweep,
rebuilt and timed in one process, round-robin, beside its FLOP ratio.

Each run of a sweep with ``eval.inference=true`` records its own prefill and decode figures,
but runs execute one after another, minutes apart, and on a shared machine the load changes
between them: a ratio of two such figures carries that change. Here every model of the sweep
(dense included) is rebuilt in one process (its plan replayed on the base model; SliceGPT,
whose plan holds no rotations, pruned again from the run's own settings and checked against
the recorded parameter count), then timed in rounds: in each round every model runs one
prefill and one decode measurement, so a change of load touches all models alike. Speed-ups
are the median over rounds of each round's dense / pruned ratio.

Beside them the FLOP ratio of a prefill (``bench.flops.forward_flops``: linear layers, LM head
and causal attention core) says what the measured ratio would be if time followed
arithmetic; where they diverge, the cause is in what FLOPs leave out (per-block overheads
that removing an attention module does not remove, narrow matrix products running below the
throughput of wide ones, the LM head's share).

    python -m bench.inference_replay --results results --experiment cpu_smollm2 \\
        --experiment cpu_smollm2_downstream --model smollm2_135m --out results/inference_replay
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.flops import forward_flops
from twossp.data import token_stream
from twossp.evaluation.inference import first_window, greedy_generate
from twossp.evaluation.kv_cache import kv_shape
from twossp.methods.registry import method_names
from twossp.modeling import count_params, load_model
from twossp.plan import PrunePlan
from twossp.results import members, plan_path, read_runs
from twossp.surgery import apply_plan

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One model of the sweep and what was measured on it."""

    method: str
    sparsity: float
    config_hash: str
    achieved: float
    params: int
    ppl: float | None
    ppl_interval: tuple[float | None, float | None]
    model: object = None
    flops: float = 0.0
    kv_bytes: int = 0
    prefill_s: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "dense" if self.method == "dense" else f"{self.method} {self.sparsity:.3f}"


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
    """The newest run of each (method, sparsity) in ``experiments`` with inference rows."""
    frame = read_runs(results)
    member = members(results)
    keep = frame["config_hash"].map(lambda h: bool(member.get(h, set()) & set(experiments)))
    frame = frame[keep & (frame["model"] == model) & (frame["protocol"] == protocol)]
    timed = set(frame.loc[frame["metric"] == "prefill_latency", "config_hash"])
    frame = frame[frame["config_hash"].isin(timed)].sort_values("created_at")
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
            ctx = PruneContext(ready.target, ready.calibration, spec.seed, progress=False)
            torch.manual_seed(spec.seed)
            ready.method.prune(model, ctx)
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


@torch.no_grad()
def measure_round(entries: list[Entry], window: torch.Tensor, new_tokens: int) -> None:
    """One prefill and one decode measurement of every model, in turn."""
    prompt = window[:, :128]
    for e in entries:
        e.prefill_s.append(_timed(lambda m=e.model: m(input_ids=window, use_cache=False)))
        one = _timed(lambda m=e.model: greedy_generate(m, prompt, 1))
        full = _timed(lambda m=e.model: greedy_generate(m, prompt, new_tokens))
        e.decode_tps.append((new_tokens - 1) / (full - one))


def ratios(entries: list[Entry], e: Entry, series: str, invert: bool) -> list[float]:
    """Each round's dense / pruned ratio of ``series`` (pruned / dense with ``invert``)."""
    dense = next(d for d in entries if d.method == "dense")
    pairs = zip(getattr(dense, series), getattr(e, series), strict=True)
    return [(b / a) if invert else (a / b) for a, b in pairs]


def _speedup(entries: list[Entry], e: Entry, series: str, invert: bool) -> str:
    r = ratios(entries, e, series, invert)
    return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def table(entries: list[Entry], meta: dict) -> str:
    dense = next(d for d in entries if d.method == "dense")
    lines = [
        "| method | sparsity (achieved) | params | FLOP ratio | prefill ms | prefill speed-up "
        "| decode tok/s | decode speed-up | KV bytes/token (saved) | WikiText-2 ppl [95%] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        low, high = e.ppl_interval
        ppl = "" if e.ppl is None else f"{e.ppl:.1f}"
        if ppl and low is not None and low == low:
            ppl += f" [{low:.1f}, {high:.1f}]"
        saved = 1 - e.kv_bytes / dense.kv_bytes
        lines.append(
            f"| {e.method} | {e.sparsity:.3f} ({e.achieved:.3f}) | {e.params / 1e6:.1f}M "
            f"| {dense.flops / e.flops:.2f} | {1000 * statistics.median(e.prefill_s):.0f} "
            f"| {_speedup(entries, e, 'prefill_s', invert=False)} "
            f"| {statistics.median(e.decode_tps):.1f} "
            f"| {_speedup(entries, e, 'decode_tps', invert=True)} "
            f"| {e.kv_bytes:,} ({100 * saved:.0f}%) | {ppl} |"
        )
    caption = (
        f"{meta['model']}, protocol={meta['protocol']}, {meta['device']} {meta['dtype']}, "
        f"{meta['threads']} thread(s), prefill of {meta['seqlen']} tokens, decode of "
        f"{meta['new_tokens']} tokens after 128 (batch 1, KV cache); median of {meta['rounds']} "
        "round-robin rounds after a warm-up round; speed-ups: median (min-max) of the rounds' "
        "ratios to dense; FLOP ratio = dense / pruned FLOPs of the prefill."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
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
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--render",
        action="store_true",
        help="only re-render <out>/inference_replay.md from the saved <out>/inference_replay.json",
    )
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads((args.out / "inference_replay.json").read_text())
        order = {name: i for i, name in enumerate(method_names())}
        entries = [
            Entry(**{**m, "ppl_interval": tuple(m["ppl_interval"])}) for m in saved["models"]
        ]
        entries.sort(key=lambda e: (order.get(e.method, len(order)), e.sparsity))
        text = table(entries, saved["meta"])
        (args.out / "inference_replay.md").write_text(text)
        print(text)
        return
    logging.basicConfig(level=logging.INFO, format="[inference_replay] %(message)s")
    torch.set_num_threads(args.threads)

    entries = discover(args.results, args.experiment, args.model, args.protocol)
    if not any(e.method == "dense" for e in entries):
        raise SystemExit(f"no dense run with inference rows in {args.experiment}")
    spec = _run_spec(args.model, "dense", 0.375, args.protocol, args.rebuild)
    base, tokenizer = load_model(spec.model)
    seqlen = min(spec.eval.seqlen, base.config.max_position_embeddings)
    streams = {ds.name: token_stream(tokenizer, ds, seqlen)[0] for ds in spec.eval.datasets}
    window, source = first_window(streams, seqlen, base.config.vocab_size)
    window = window.reshape(1, -1)
    for e in entries:
        e.model = rebuild(e, base, args.results, args).eval()
        e.flops = forward_flops(e.model, 1, seqlen).total
        e.kv_bytes = kv_shape(e.model).bytes_per_token
        log.info("rebuilt %s (%d parameters)", e.label, e.params)
    del base
    measure_round(entries, window, 8)  # warm-up, not counted
    for e in entries:
        e.prefill_s.clear()
        e.decode_tps.clear()
    for r in range(args.rounds):
        start = time.perf_counter()
        measure_round(entries, window, args.new_tokens)
        log.info("round %d/%d: %.0f s", r + 1, args.rounds, time.perf_counter() - start)
    meta = {
        "model": args.model,
        "protocol": args.protocol,
        "device": "cpu",
        "dtype": str(next(entries[0].model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "seqlen": seqlen,
        "source": source,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(entries, meta)
    (args.out / "inference_replay.md").write_text(text)
    (args.out / "inference_replay.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "models": [{k: v for k, v in vars(e).items() if k != "model"} for e in entries],
            },
            indent=2,
        )
    )
    print(text)


if __name__ == "__main__":
    main()
