"""Load causal LMs (hub id or local path, dense or pruned) and save pruned ones.

A pruned checkpoint is a normal HF folder (config, tokenizer, ``model.safetensors``) plus
``twossp_structure.json``, which says how to reshape the freshly built model before the
weights load. :func:`load_model` handles both kinds.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from twossp.adapters import adapter_class
from twossp.io import atomic_write_text
from twossp.model_source import Source, dequantized_copy, hub_offline, resolve
from twossp.surgery import rebuild_structure, structure_of

log = logging.getLogger(__name__)

STRUCTURE_FILE = "twossp_structure.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """Where a model comes from and how to place it.

    Attributes:
        name_or_path: hub id (``meta-llama/Llama-2-7b-hf``) or local folder.
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU) or float32 / bfloat16 / float16.
        device: ``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ...
        revision: hub revision (branch, tag or commit).
        device_map: passed to ``from_pretrained`` for models larger than one GPU (``auto``
            spreads blocks over the visible GPUs, then CPU; see :func:`execution_device`).
        max_memory: per-device caps for ``device_map`` (``{0: "70GiB", "cpu": "200GiB"}``).
        offload_folder: where accelerate may offload weights that fit nowhere else.
        gguf_file: a GGUF file inside the local folder ``name_or_path``; it is dequantized
            once into ``cache_dir`` (see :mod:`twossp.model_source`).
        hub_fallback: hub id read when the local folder ``name_or_path`` is absent.
        cache_dir: where dequantized GGUF copies live (None: ``$TWOSSP_CACHE`` or
            ``~/.cache/twossp``).
    """

    name_or_path: str
    dtype: str = "auto"
    device: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    device_map: str | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    gguf_file: str | None = None
    hub_fallback: str | None = None
    cache_dir: str | None = None

    def source(self) -> Source:
        """The folder or hub id to read (see :func:`twossp.model_source.resolve`)."""
        return resolve(self.name_or_path, self.gguf_file, self.hub_fallback, self.revision)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} unknown; use auto or one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class ModelNotFoundError(FileNotFoundError):
    """A model id or path whose config cannot be read (no local folder, no hub, no cache)."""


def check_model(spec: ModelSpec):
    """Read only the config and fail early on a missing path or unsupported architecture."""
    source = spec.source()
    try:
        config = AutoConfig.from_pretrained(
            source.path,
            revision=source.revision,
            trust_remote_code=spec.trust_remote_code,
            **({"gguf_file": source.gguf_file} if source.gguf_file else {}),
        )
    except OSError as exc:
        hub = "is disabled (HF_HUB_OFFLINE is set)" if hub_offline() else "did not serve it"
        raise ModelNotFoundError(
            f"cannot read the config of model {source.path!r}: it is not a local folder, "
            f"the hub {hub} and it is not in the Hugging Face cache. Point model.name_or_path "
            "at a local copy, or run where the hub is reachable (gated models also need HF_TOKEN)."
        ) from exc
    adapter_class(config.model_type)
    return config


def load_model(spec: ModelSpec, with_tokenizer: bool = True) -> tuple[nn.Module, object]:
    """Load ``(model, tokenizer)`` in eval mode on the resolved device and dtype.

    With ``with_tokenizer=False`` the tokenizer is not read and ``None`` is returned for it.
    """
    check_model(spec)
    source = dequantized_copy(spec.source(), spec.cache_dir)
    config = AutoConfig.from_pretrained(
        source.path, revision=source.revision, trust_remote_code=spec.trust_remote_code
    )
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    tokenizer = None
    if with_tokenizer:
        tokenizer = load_tokenizer(spec, source)
    structure_file = Path(source.path) / STRUCTURE_FILE
    if structure_file.exists():
        # With a device_map the model is spread from the CPU, never gathered on one GPU first.
        home = device if spec.device_map is None else torch.device("cpu")
        model = _load_pruned(Path(source.path), config, dtype, home)
        if spec.device_map is not None:
            model = _dispatch(model, spec)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            source.path,
            revision=source.revision,
            dtype=dtype,
            trust_remote_code=spec.trust_remote_code,
            device_map=spec.device_map,
            **_placement_kwargs(spec),
        )
        if spec.device_map is None:
            model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded %s (%s, %s)", source.path, config.model_type, dtype)
    return model, tokenizer


def load_tokenizer(spec: ModelSpec, source: Source | None = None):
    """The model's tokenizer (from the dequantized copy for a GGUF model)."""
    source = source or dequantized_copy(spec.source(), spec.cache_dir)
    return AutoTokenizer.from_pretrained(
        source.path, revision=source.revision, trust_remote_code=spec.trust_remote_code
    )


def _placement_kwargs(spec: ModelSpec) -> dict:
    """Extra ``from_pretrained`` arguments for ``device_map`` placement (only those set)."""
    if spec.device_map is None:
        return {}
    extra = {}
    if spec.max_memory:
        extra["max_memory"] = _max_memory(spec)
    if spec.offload_folder:
        extra["offload_folder"] = spec.offload_folder
    return extra


def _max_memory(spec: ModelSpec) -> dict:
    """``max_memory`` with GPU indices as ints (YAML / CLI keys arrive as strings)."""
    return {int(k) if str(k).isdigit() else k: v for k, v in dict(spec.max_memory).items()}


def _dispatch(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """Spread a model loaded on one device over ``spec.device_map`` with accelerate."""
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = spec.device_map
    if isinstance(device_map, str):
        device_map = infer_auto_device_map(
            model,
            max_memory=_max_memory(spec) if spec.max_memory else None,
            no_split_module_classes=list(getattr(model, "_no_split_modules", None) or []),
        )
    return dispatch_model(model, device_map=device_map, offload_dir=spec.offload_folder)


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


def _load_pruned(path: Path, config, dtype: torch.dtype, device: torch.device) -> nn.Module:
    structure = json.loads((path / STRUCTURE_FILE).read_text())
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    rebuild_structure(model, structure)
    missing, unexpected = load_safetensors(model, path / "model.safetensors", strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    real_missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise ValueError(f"pruned checkpoint mismatch: missing {real_missing}, extra {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.to(device)


def save_pruned(model: nn.Module, path: str | Path, tokenizer=None) -> Path:
    """Save a (pruned) model so that :func:`load_model` restores it exactly."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    save_safetensors(model, str(path / "model.safetensors"))
    atomic_write_text(path / STRUCTURE_FILE, json.dumps(structure_of(model)))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, shared (tied) tensors counted once."""
    return sum(p.numel() for p in model.parameters())
