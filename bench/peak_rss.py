"""Peak resident memory of one load + 2SSP prune, measured in this fresh process.

    python -m bench.peak_rss --model DIR --calib calib.pt --sparsity 0.375

Prints one JSON line. RSS figures come from ``/proc/self/status`` (Linux): ``VmRSS`` (now)
and ``VmHWM`` (high-water mark). The mark is read after loading (``load_peak_rss``: imports
and loading), then reset (``/proc/self/clear_refs``, value 5), so ``prune_peak_rss`` is the
peak *during* pruning. ``getrusage().ru_maxrss`` is not used: Linux carries the mark of the
forked parent across ``exec``, so a child of a big process reports the parent's size. On
CUDA the peak of ``torch.cuda.max_memory_allocated`` during pruning is reported as well.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _warm_up(model_dir: str, calib, sparsity: float) -> None:
    """Load every code path (model class, kernels, 2SSP) on a miniature of the same config,
    so that the runtime baseline holds the code and only the real run's data grows after."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from twossp.methods import PruneContext, build_method

    config = AutoConfig.from_pretrained(model_dir)
    heads = config.num_attention_heads
    config.num_hidden_layers = 2
    config.hidden_size = 8 * heads
    config.intermediate_size = 32
    config.head_dim = 8
    mini = AutoModelForCausalLM.from_config(config).eval()
    build_method("twossp").prune(mini, PruneContext(sparsity, calib[:2, :16], 0, False))
    del mini


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--sparsity", type=float, default=0.375)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from twossp.evaluation.costs import weight_bytes
    from twossp.evaluation.runtime import track_peak_memory
    from twossp.methods import PruneContext, build_method
    from twossp.modeling import ModelSpec, load_model

    calib = torch.load(args.calib)
    _warm_up(args.model, calib, args.sparsity)
    kib = 1024
    out = {"rss_runtime": _status_kib("VmRSS") * kib}
    model, _ = load_model(
        ModelSpec(args.model, dtype=args.dtype, device=args.device), with_tokenizer=False
    )
    out["weight_bytes"] = weight_bytes(model)
    out["rss_loaded"] = _status_kib("VmRSS") * kib
    out["load_peak_rss"] = _status_kib("VmHWM") * kib
    out["hwm_reset"] = _reset_hwm()
    t0 = time.perf_counter()
    with track_peak_memory() as cuda_peak:
        build_method("twossp").prune(model, PruneContext(args.sparsity, calib, 0, False))
    out["prune_seconds"] = time.perf_counter() - t0
    out["prune_peak_rss"] = _status_kib("VmHWM") * kib
    out["cuda_peak_bytes"] = cuda_peak.peak_bytes
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
