"""Tiny randomly initialised models of every supported family, built from configs.

Used by the tests and the benchmarks; nothing is downloaded. The families are those of the
family table (``twossp/remote/families.py``); each one's settings beyond the shared sizes are
its adapter's ``tiny_configs``.
"""

from __future__ import annotations

import torch
import transformers
from transformers import AutoModelForCausalLM, Qwen2Config

from twossp.adapters import UnsupportedArchitectureError, adapter_class
from twossp.remote.families import FAMILIES as _FAMILY_TABLE

FAMILIES: tuple[str, ...] = tuple(_FAMILY_TABLE)


def tiny_config(
    family: str,
    n_blocks: int = 4,
    hidden: int = 64,
    intermediate: int = 160,
    vocab: int = 128,
    context: int = 256,
):
    """The stock config of a tiny ``family`` model (4 heads, untied embeddings).

    Raises:
        ValueError: ``family`` is not in :data:`FAMILIES`, or its adapter gives it no
            tiny settings.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    shared = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=n_blocks,
        num_attention_heads=4,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    try:
        settings = adapter_class(family).tiny_configs[family]
    except (UnsupportedArchitectureError, KeyError):
        raise ValueError(
            f"family {family!r} has no tiny test config: add it to its adapter's tiny_configs"
        ) from None
    settings = {k: v(shared) if callable(v) else v for k, v in settings.items()}
    config_class = getattr(transformers, _FAMILY_TABLE[family][0])
    return config_class(**settings, **shared)


def tiny_model(family: str = "llama", n_blocks: int = 4, seed: int = 0, dtype=torch.float32, **kw):
    """A random tiny model in eval mode with gradients off.

    Weights are re-drawn with a larger scale than HF's init so that every block matters
    (with std 0.02 on a 64-wide model the blocks are nearly the identity).
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, n_blocks, **kw), dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.05)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_mixed_window_qwen2(sliding_window: int = 4):
    """A tiny Qwen2 whose blocks 0-1 use full attention and 2-3 a sliding window (shorter than
    test prompts, so the window matters): a config with two ``layer_types``."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=sliding_window,
        max_window_layers=2,
        max_position_embeddings=64,
    )
    assert len(set(config.layer_types)) == 2
    model = AutoModelForCausalLM.from_config(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
