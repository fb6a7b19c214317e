"""Where a model computes: device and dtype settings, and the devices of placed modules.

Kept apart from the loader (:mod:`twossp.modeling`) so that code running a model (forward,
scoring, perplexity, the methods) does not import the loading machinery.
"""

from __future__ import annotations

import itertools
import os

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str, name: str = "model.device") -> torch.device:
    """``auto`` (cuda when available, else cpu) or any device string torch reads.

    Raises:
        ValueError: a string torch does not read as a device (``gpu``, ``cuda:x``), named
            as setting ``name``.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name}={device} is not a device; use auto, cpu, cuda or cuda:<index>"
        ) from None


def check_device(setting: str, name: str = "model.device") -> torch.device:
    """The device of ``setting``, refused at once when this machine does not have it (a run
    would otherwise prepare its data first and fail when the weights move there).

    Raises:
        ValueError: naming the setting, why the device is absent and what to use instead.
    """
    device = resolve_device(setting, name)
    instead = f"use {name}=auto (CUDA when present, else the CPU) or {name}=cpu"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) is built without CUDA"
                if torch.version.cuda is None
                else "no CUDA device is visible"
            )
            raise ValueError(f"{name}={setting} but CUDA is not available here ({why}); {instead}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{name}={setting} but this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={setting} but MPS is not available here; {instead}")
    return device


def use_threads(threads: int | None) -> int:
    """Set the CPU threads torch computes with; None keeps torch's default (one per core).

    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set too, for libraries and processes
    started afterwards. Returns the number torch now uses.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or null, got {threads!r}")
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    return torch.get_num_threads()


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
