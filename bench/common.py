"""Settings, models and calibration shared by the bench sections."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from twossp.modeling import ModelSpec, load_model
from twossp.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWOSSP_SHARED", ROOT.parent / "shared")).resolve()
STORIES = SHARED / "assets" / "models" / "stories260K"
TEXT = SHARED / "assets" / "text"
SECTIONS = ("prune", "stage2", "eval", "forward", "rss", "smollm2")


@dataclass
class BenchConfig:
    """What the bench runs. The defaults are the published ``make bench`` setting.

    Attributes:
        deep_blocks / deep_hidden / deep_intermediate / deep_context / deep_vocab: the
            random-init Llama of realistic depth (CPU-sized width, context >= 2048).
        sparsity: target of every pruning run.
        calib_samples / calib_seqlen: the calibration set every method gets.
        stage2_blocks: depths for the stage-2 scaling curve.
        latency_seqlen / latency_batch: the forward measured on pruned models.
        repeats / warmup: timed and untimed calls per latency figure.
        evopress_generations / evopress_initial: EvoPress on the deep model runs this many
            generations from this many random configurations; its full-run time is
            extrapolated from the cost per fitness evaluation.
        eval_windows / eval_seqlen / eval_batch: the perplexity-overhead comparison.
        threads: torch intra-op threads (0 keeps torch's default).
        clock: ``auto`` (process CPU time on CPU with one thread, else wall time), ``wall`` or
            ``process``; CUDA timings always use events / synchronised wall time.
        device / dtype: where models run (``auto``: CUDA when available).
    """

    deep_blocks: int = 32
    deep_hidden: int = 256
    deep_intermediate: int = 688
    deep_context: int = 2048
    deep_vocab: int = 512
    sparsity: float = 0.375
    calib_samples: int = 8
    calib_seqlen: int = 256
    stage2_blocks: tuple[int, ...] = (8, 16, 32)
    latency_seqlen: int = 2048
    latency_batch: int = 1
    repeats: int = 3
    warmup: int = 1
    evopress_generations: int = 1
    evopress_initial: int = 16
    eval_windows: int = 32
    eval_seqlen: int = 512
    eval_batch: int = 8
    eval_repeats: int = 5
    threads: int = 1
    clock: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    methods: tuple[str, ...] | None = None
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> BenchConfig:
        """A seconds-long smoke setting (tests): shallow, narrow, short sequences."""
        settings = dict(
            deep_blocks=6,
            deep_hidden=64,
            deep_intermediate=160,
            deep_context=256,
            calib_samples=4,
            calib_seqlen=32,
            stage2_blocks=(4, 6),
            latency_seqlen=128,
            repeats=2,
            warmup=1,
            evopress_generations=1,
            evopress_initial=4,
            eval_windows=4,
            eval_seqlen=64,
            eval_batch=2,
            eval_repeats=2,
            quick=True,
        )
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(cfg: BenchConfig) -> tuple[torch.device, torch.dtype]:
    from twossp.devices import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    return device, resolve_dtype(cfg.dtype, device)


def clock_name(cfg: BenchConfig) -> str:
    """The clock timings use: CPU time when it measures the same thing as wall time on an
    idle machine (one thread on CPU) and stays put on a busy one; wall time otherwise."""
    device, _ = resolve(cfg)
    if device.type == "cuda":
        return "wall"
    if cfg.clock != "auto":
        return cfg.clock
    return "process" if torch.get_num_threads() == 1 else "wall"


def now(cfg: BenchConfig):
    """A zero-argument clock for ``cfg`` (synchronising CUDA first)."""
    from twossp.evaluation.costs import cpu_clock

    device, _ = resolve(cfg)
    read = cpu_clock(clock_name(cfg))

    def tick() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return read()

    return tick


def set_threads(threads: int) -> int:
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def deep_model(cfg: BenchConfig, n_blocks: int | None = None, seed: int = 0) -> nn.Module:
    """The random-init Llama of realistic depth (or ``n_blocks`` deep) on the bench device."""
    device, dtype = resolve(cfg)
    model = tiny_model(
        "llama",
        n_blocks=n_blocks or cfg.deep_blocks,
        seed=seed,
        dtype=dtype,
        hidden=cfg.deep_hidden,
        intermediate=cfg.deep_intermediate,
        vocab=cfg.deep_vocab,
        context=cfg.deep_context,
    )
    return model.to(device)


def have_stories() -> bool:
    return STORIES.exists()


def stories_model(cfg: BenchConfig):
    """stories260K and its tokenizer, on the bench device (None, None without ../shared)."""
    if not have_stories():
        return None, None
    return load_model(ModelSpec(str(STORIES), dtype=cfg.dtype, device=cfg.device))


def calibration(cfg: BenchConfig, tokenizer, vocab: int) -> tuple[torch.Tensor, str]:
    """``[calib_samples, calib_seqlen]`` ids: C4 train windows through ``tokenizer`` when the
    offline copy exists, else uniform random ids below ``vocab`` (seeded)."""
    c4 = TEXT / "c4_train_1000.jsonl"
    if tokenizer is not None and c4.exists():
        from twossp.data import CalibrationSpec, TextDataset, calibration_samples

        ds = TextDataset(name="c4_train", local_path=str(c4), split="train", join="\n\n")
        spec = CalibrationSpec(ds, cfg.calib_samples, cfg.calib_seqlen, seed=0)
        ids = calibration_samples(tokenizer, spec)
        if int(ids.max()) < vocab:
            return ids, f"C4 train, {cfg.calib_samples} x {cfg.calib_seqlen} tokens"
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (cfg.calib_samples, cfg.calib_seqlen), generator=g)
    return ids, f"random ids, {cfg.calib_samples} x {cfg.calib_seqlen} tokens"


def eval_tokens(cfg: BenchConfig, tokenizer, vocab: int) -> tuple[torch.Tensor, str]:
    """A token stream of ``eval_windows`` windows: the start of WikiText-2 test as every run
    scores it (:func:`twossp.data.token_stream`) when the offline copy exists, else random
    ids below ``vocab`` (seeded)."""
    need = cfg.eval_windows * cfg.eval_seqlen
    wiki = TEXT / "wikitext2_raw_test.txt"
    if tokenizer is not None and wiki.exists():
        from twossp.data import TextDataset, token_stream

        ds = TextDataset(name="wikitext2", local_path=str(wiki), split="test", join="\n\n")
        ids, _ = token_stream(tokenizer, ds, cfg.eval_seqlen)
        if ids.numel() >= need:
            return ids[:need], "WikiText-2 test"
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab, (need,), generator=g), "random ids"
