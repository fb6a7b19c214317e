"""Load causal LMs (hub id or local path, dense or pruned) and save pruned ones.

A pruned checkpoint is a ``save_pretrained`` folder (sharded safetensors, config, generation
config, tokenizer) that stock transformers loads correctly or not at all:

- a stock architecture (whole blocks removed, every block with attention and MLP, one FFN
  width) has a plain config with the shrunk sizes and loads without custom code;
- anything else gets ``model_type`` ``twossp_<family>`` with an ``auto_map`` to the files of
  :mod:`twossp.remote` copied into the folder and a ``twossp_structure`` record in
  ``config.json``: it loads with ``trust_remote_code=True`` and fails without it.

:func:`load_model` reads both without running the folder's code (the package holds the same
files), and also folders saved by earlier versions (``twossp_structure.json`` manifest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from twossp import remote
from twossp.adapters import adapter_class
from twossp.devices import resolve_device, resolve_dtype
from twossp.io import honour_umask
from twossp.model_source import (
    Source,
    check_weights,
    config_source,
    dequantized_copy,
    hub_offline,
    resolve,
)
from twossp.remote.configuration_twossp import PRUNED_CONFIGS, PRUNED_PREFIX
from twossp.remote.families import pruned_names
from twossp.remote.pruned_modules import STRUCTURE_KEY
from twossp.surgery import is_stock, rebuild_structure, structure_of

log = logging.getLogger(__name__)

STRUCTURE_FILE = "twossp_structure.json"  # manifest of folders saved by earlier versions


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


class ModelNotFoundError(FileNotFoundError):
    """A model id or path whose config cannot be read (no local folder, no hub, no cache)."""


def check_model(spec: ModelSpec):
    """Read only the config and fail early on a missing path, a folder without weights or
    an unsupported architecture."""
    try:  # named after the architecture: an unsupported family is the first thing to know
        check_weights(spec.source())
        no_weights = None
    except FileNotFoundError as exc:
        no_weights = exc
    source = config_source(spec.source(), spec.cache_dir)
    pruned = _pruned_folder(source)
    if pruned is not None:
        adapter_class(pruned[0].model_type)
        if no_weights is not None:
            raise no_weights
        return pruned[0]
    try:
        config = AutoConfig.from_pretrained(
            source.path,
            revision=source.revision,
            trust_remote_code=spec.trust_remote_code,
            **({"gguf_file": source.gguf_file} if source.gguf_file else {}),
        )
    except OSError as exc:
        if no_weights is not None:
            raise no_weights from None
        hub = "is disabled (HF_HUB_OFFLINE is set)" if hub_offline() else "did not serve it"
        instead = ""
        if source.path != spec.name_or_path:  # the local folder was absent: its hub fallback
            instead = f"the local folder {spec.name_or_path!r} does not exist and "
        raise ModelNotFoundError(
            f"cannot read model {source.path!r}: {instead}the hub {hub} and it is not in the "
            "Hugging Face cache. Set TWOSSP_SHARED to a folder holding assets/models/ (the "
            "offline copies), point model.name_or_path at a local copy, or run where the hub "
            "is reachable (gated models also need HF_TOKEN)."
        ) from exc
    adapter_class(config.model_type)
    if no_weights is not None:
        raise no_weights
    return config


def load_model(spec: ModelSpec, with_tokenizer: bool = True) -> tuple[nn.Module, object]:
    """Load ``(model, tokenizer)`` in eval mode on the resolved device and dtype.

    With ``with_tokenizer=False`` the tokenizer is not read and ``None`` is returned for it.
    """
    check_model(spec)
    source = dequantized_copy(spec.source(), spec.cache_dir)
    pruned = _pruned_folder(source)
    if pruned is not None:
        config = pruned[0]
    else:
        config = AutoConfig.from_pretrained(
            source.path, revision=source.revision, trust_remote_code=spec.trust_remote_code
        )
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    tokenizer = None
    if with_tokenizer:
        tokenizer = load_tokenizer(spec, source)
    if pruned is not None:
        # With a device_map the model is spread from the CPU, never gathered on one GPU first.
        home = device if spec.device_map is None else torch.device("cpu")
        model = _load_pruned(Path(source.path), *pruned, dtype, home)
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


def _pruned_folder(source: Source) -> tuple[object, dict] | None:
    """``(stock config, structure)`` of a pruned twossp folder; None for anything else.

    Custom-code folders (``model_type`` ``twossp_<family>``) give their family's stock
    config without the custom keys; folders of earlier versions give their config and the
    ``twossp_structure.json`` manifest. No code from the folder runs.
    """
    folder = Path(source.path)
    if source.gguf_file is not None or not (folder / "config.json").is_file():
        return None
    raw = json.loads((folder / "config.json").read_text())
    model_type = str(raw.get("model_type", ""))
    if model_type.startswith(PRUNED_PREFIX) and STRUCTURE_KEY in raw:
        base = model_type.removeprefix(PRUNED_PREFIX)
        if base not in PRUNED_CONFIGS:
            raise ValueError(f"{folder}: unknown pruned model_type {model_type!r}")
        structure = raw.pop(STRUCTURE_KEY)
        for key in ("auto_map", "architectures", "model_type", "transformers_version"):
            raw.pop(key, None)
        return CONFIG_MAPPING[base].from_dict(raw), structure
    if (folder / STRUCTURE_FILE).is_file():
        config = AutoConfig.from_pretrained(folder)
        return config, json.loads((folder / STRUCTURE_FILE).read_text())
    return None


def _load_pruned(
    path: Path, config, structure: dict, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    rebuild_structure(model, structure)
    _load_weights(model, path)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.to(device)


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load the (possibly sharded) safetensors of ``path`` into ``model``, strictly."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    expected, seen = set(model.state_dict()), set()
    for name in files:
        tensors = load_file(path / name)
        unexpected = sorted(set(tensors) - expected)
        if unexpected:
            raise ValueError(f"pruned checkpoint {path}: unexpected tensors {unexpected[:5]}")
        model.load_state_dict(tensors, strict=False)
        seen.update(tensors)
    tied = set(getattr(model, "all_tied_weights_keys", None) or ())
    missing = sorted(expected - seen - tied)
    if missing:
        raise ValueError(f"pruned checkpoint {path}: missing tensors {missing[:5]}")


def save_pruned(
    model: nn.Module,
    path: str | Path,
    tokenizer=None,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Save a (pruned) model so that stock transformers and :func:`load_model` restore it.

    Writes through ``save_pretrained`` (sharded safetensors, config, generation config) and
    ``tokenizer.save_pretrained``; works for device_map-spread and offloaded models. A
    stock architecture gets a plain config; anything else a ``twossp_<family>`` config and
    the :mod:`twossp.remote` files (see the module docstring). The folder appears whole or
    not at all; an existing model folder at ``path`` is replaced.

    Raises:
        ValueError: the model cannot be described (checked before anything is written).
    """
    path = Path(path)
    structure = structure_of(model)
    custom = not is_stock(structure)
    model_type = model.config.model_type
    if custom and model_type not in PRUNED_CONFIGS:
        raise ValueError(
            f"cannot save a pruned {model_type!r} model with custom code; supported: "
            f"{', '.join(PRUNED_CONFIGS)}"
        )
    with _staged_folder(path) as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if custom:
            _write_custom_config(folder, model_type, structure)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    log.info("saved %s model to %s", "custom-code" if custom else "stock", path)
    return path


def _write_custom_config(folder: Path, model_type: str, structure: dict) -> None:
    """Point ``config.json`` at the pruned classes and copy their files into ``folder``."""
    config_class = PRUNED_CONFIGS[model_type]
    model_class = pruned_names(model_type)[1]
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type=config_class.model_type,
        architectures=[model_class],
        auto_map={
            "AutoConfig": f"configuration_twossp.{config_class.__name__}",
            "AutoModelForCausalLM": f"modeling_twossp.{model_class}",
        },
    )
    config[STRUCTURE_KEY] = structure
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for source in remote.source_files():
        shutil.copyfile(source, folder / source.name)


@contextlib.contextmanager
def _staged_folder(path: Path):
    """Yield a temporary folder beside ``path`` that replaces ``path`` on success."""
    if path.exists() and any(path.iterdir()) and not (path / "config.json").exists():
        raise FileExistsError(f"{path} exists and is not a model folder; not replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staged
        honour_umask(staged)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            path.rename(old)
        staged.rename(path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, shared (tied) tensors counted once."""
    return sum(p.numel() for p in model.parameters())
