"""Modules a pruned model is made of, and the structure record that rebuilds it.

This file is copied verbatim into every pruned checkpoint folder that stock transformers
cannot build alone (see ``modeling_twossp.py`` beside it), so it imports only torch. The
twossp package imports the same classes from here: this file is their only definition.

Stand-ins and extra modules:

- :class:`ZeroAttention` / :class:`ZeroMLP` replace a removed attention / MLP submodule;
  they have no weights and add nothing to the residual stream. The norm that only fed the
  removed submodule becomes ``nn.Identity``.
- :class:`ScaleFreeRMSNorm` replaces an RMSNorm whose scale was folded into its readers
  (rotation methods: SliceGPT).
- :class:`ShortcutBlock` replaces a decoder block whose residual stream changes basis (and
  width) inside it (SliceGPT).

A *structure record* (a JSON-ready dict, stored under ``twossp_structure`` in the pruned
folder's ``config.json``) says how a model freshly built from the (already shrunk) config
differs from the pruned one: which modules are replaced (parents first), which tensors have
other shapes (per-block FFN widths, sliced widths) and which attention modules use another
KV-cache slot (``layer_idx``). :func:`record_structure` writes it, :func:`apply_structure`
replays it on a fresh model before the weights load.
"""

from __future__ import annotations

import torch
from torch import nn

STRUCTURE_KEY = "twossp_structure"
STRUCTURE_FORMAT = 1


class ZeroAttention(nn.Module):
    """Stands in for a removed attention submodule: it has no weights and adds nothing."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return torch.zeros_like(hidden_states), None


class ZeroMLP(nn.Module):
    """Stands in for a removed MLP submodule: it has no weights and adds nothing."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return torch.zeros_like(hidden_states)


class ScaleFreeRMSNorm(nn.Module):
    """RMSNorm without a scale: ``x / sqrt(sum(x**2) / mean_dim + eps)``.

    Args:
        mean_dim: the width the sum of squares is divided by (the model's hidden size, kept
            when the input is sliced narrower).
        eps: the model's RMSNorm epsilon.
    """

    def __init__(self, mean_dim: int, eps: float):
        super().__init__()
        self.mean_dim = int(mean_dim)
        self.eps = float(eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.promote_types(dtype, torch.float32))
        variance = x.pow(2).sum(-1, keepdim=True) / self.mean_dim
        return (x * torch.rsqrt(variance + self.eps)).to(dtype)

    def extra_repr(self) -> str:
        return f"mean_dim={self.mean_dim}, eps={self.eps}"

    def structure_spec(self) -> dict:
        return {"mean_dim": self.mean_dim, "eps": self.eps}

    @classmethod
    def from_structure(cls, replaced: nn.Module, spec: dict) -> ScaleFreeRMSNorm:
        return cls(spec["mean_dim"], spec["eps"])


class ShortcutBlock(nn.Module):
    """A sequential pre-norm decoder block whose residual connections apply linear maps.

    ``h = attn_shortcut(h) + attn(attn_norm(h))`` then ``h = mlp_shortcut(h) + mlp(mlp_norm(h))``.
    It adopts the children of the block it replaces under their own names, so parameter
    names do not change; only ``attn_shortcut.weight`` and ``mlp_shortcut.weight`` are new.
    The forward is the one Llama, Mistral, Qwen2 and Phi-3 share (Phi-3's residual dropouts,
    identities at inference, are not applied).

    Args:
        block: the decoder block replaced.
        names: attribute names of its (attention, MLP, attention norm, MLP norm).
        attn_shortcut: ``[d_mid, d_in]`` linear of the attention residual connection.
        mlp_shortcut: ``[d_out, d_mid]`` linear of the MLP residual connection.
    """

    def __init__(
        self,
        block: nn.Module,
        names: tuple[str, str, str, str],
        attn_shortcut: nn.Linear,
        mlp_shortcut: nn.Linear,
    ):
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        for key, value in vars(block).items():  # hidden_size, config, attention_type, ...
            if not key.startswith("_") and key != "training" and not isinstance(value, nn.Module):
                setattr(self, key, value)
        self.attn_name, self.mlp_name, self.attn_norm_name, self.mlp_norm_name = names
        self.attn_shortcut = attn_shortcut
        self.mlp_shortcut = mlp_shortcut

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        x = getattr(self, self.attn_norm_name)(hidden_states)
        out = getattr(self, self.attn_name)(hidden_states=x, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        hidden_states = self.attn_shortcut(hidden_states) + out
        x = getattr(self, self.mlp_norm_name)(hidden_states)
        return self.mlp_shortcut(hidden_states) + getattr(self, self.mlp_name)(x)

    def structure_spec(self) -> dict:
        return {"names": [self.attn_name, self.mlp_name, self.attn_norm_name, self.mlp_norm_name]}

    @classmethod
    def from_structure(cls, replaced: nn.Module, spec: dict) -> ShortcutBlock:
        """A block with placeholder shortcuts; the structure's shapes size them."""
        return cls(replaced, tuple(spec["names"]), _linear_like(replaced), _linear_like(replaced))


def _linear_like(module: nn.Module) -> nn.Linear:
    """A 1x1 bias-free linear on the device and dtype of ``module``'s weights."""
    reference = next(module.parameters())
    return nn.Linear(1, 1, bias=False, device=reference.device, dtype=reference.dtype)


# Every module kind a structure record may name. Loading a folder needs only this file, so
# this table is complete: a new kind is a new class here.
REPLACEMENTS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (ZeroAttention, ZeroMLP, nn.Identity, ScaleFreeRMSNorm, ShortcutBlock)
}


def _spec(module: nn.Module) -> dict:
    spec = getattr(module, "structure_spec", None)
    return {"kind": type(module).__name__, **(spec() if spec else {})}


def _build(replaced: nn.Module, spec: dict) -> nn.Module:
    cls = REPLACEMENTS[spec["kind"]]
    build = getattr(cls, "from_structure", None)
    return build(replaced, spec) if build else cls()


def record_structure(model: nn.Module, fresh: nn.Module) -> dict:
    """How ``model`` differs from ``fresh``, a model built from the same config.

    Args:
        model: the pruned model.
        fresh: a model of the same class built from ``model``'s config (the ``meta``
            device will do); it is modified (the replacements are applied to it).

    Raises:
        ValueError: a module of ``model`` has a type that no structure record can rebuild.
    """
    fresh_modules = dict(fresh.named_modules())
    modules: dict[str, dict] = {}
    for path, module in model.named_modules():
        twin = fresh_modules.get(path)
        if twin is not None and type(twin) is type(module):
            continue
        if twin is None and any(path.startswith(f"{parent}.") for parent in modules):
            continue  # made by a replaced parent (a shortcut block's shortcuts)
        if type(module).__name__ not in REPLACEMENTS:
            raise ValueError(
                f"cannot record module {path!r} of type {type(module).__name__}: a pruned "
                f"checkpoint can only replace modules by {', '.join(REPLACEMENTS)}"
            )
        modules[path] = _spec(module)
    _replace_modules(fresh, modules)
    fresh_shapes = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    shapes = {
        k: list(v.shape)
        for k, v in model.state_dict().items()
        if fresh_shapes.get(k) != tuple(v.shape)
    }
    fresh_slots = _cache_slots(fresh)
    slots = {k: v for k, v in _cache_slots(model).items() if fresh_slots.get(k) != v}
    return {"format": STRUCTURE_FORMAT, "modules": modules, "shapes": shapes, "cache_slots": slots}


def apply_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Reshape ``model``, freshly built from its config, as ``structure`` describes."""
    if structure.get("format") != STRUCTURE_FORMAT:
        raise ValueError(
            f"unknown pruned-structure format {structure.get('format')!r} "
            f"(this file reads format {STRUCTURE_FORMAT})"
        )
    _replace_modules(model, structure["modules"])
    for name, shape in structure["shapes"].items():
        _resize(model, name, tuple(shape))
    for path, slot in structure["cache_slots"].items():
        model.get_submodule(path).layer_idx = int(slot)
    return model


def _replace_modules(model: nn.Module, modules: dict[str, dict]) -> None:
    """Replace modules, parents before children (a ShortcutBlock adopts its children)."""
    for path in sorted(modules, key=lambda p: p.count(".")):
        model.set_submodule(path, _build(model.get_submodule(path), modules[path]))
    if any(spec["kind"] == "ShortcutBlock" for spec in modules.values()):
        # device_map="auto" must keep a shortcut block (whose forward adds tensors of its
        # children) on one device.
        no_split = getattr(model, "_no_split_modules", None) or []
        model._no_split_modules = type(no_split)([*no_split, "ShortcutBlock"])


def _cache_slots(model: nn.Module) -> dict[str, int]:
    return {
        path: m.layer_idx
        for path, m in model.named_modules()
        if isinstance(getattr(m, "layer_idx", None), int)
    }


def _resize(model: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Give tensor ``name`` the shape ``shape`` (uninitialised; the weights load later)."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    current = getattr(module, leaf, None)
    if current is None:
        raise ValueError(f"pruned structure names {name!r}, which the model does not have")
    if tuple(current.shape) == shape:
        return
    fresh = torch.empty(shape, dtype=current.dtype, device=current.device)
    if isinstance(current, nn.Parameter):
        setattr(module, leaf, nn.Parameter(fresh, requires_grad=current.requires_grad))
    else:
        module.register_buffer(leaf, fresh)
    if isinstance(module, nn.Linear) and leaf == "weight":
        module.out_features, module.in_features = shape
    elif isinstance(module, nn.Embedding) and leaf == "weight":
        module.num_embeddings, module.embedding_dim = shape
