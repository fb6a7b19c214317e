"""Where a model computes: device and dtype settings, and the devices of placed modules.

Kept apart from the loader (:mod:`twossp.modeling`) so that code running a model (forward,
scoring, perplexity, the methods) does not import the loading machinery.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} unknown; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def execution_device(module: nn.Module) -> torch.device | None:
    """The device ``module`` computes on; None for a module with no weights and no hook.

    A module placed by accelerate (``device_map``, offloading) carries a hook naming its
    execution device; offloaded weights sit on the ``meta`` device until a call loads them.
    """
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where token ids for ``model`` go: the device of its input embeddings."""
    embeddings = getattr(model, "get_input_embeddings", None)  # absent on bare test modules
    device = execution_device(embeddings()) if embeddings is not None else None
    if device is None:
        device = next(model.parameters()).device
    return device
