"""Apply a :class:`PrunePlan` to a model: physical removal, never masks.

One module does this for every method, so parameter counts, configs and the KV-cache layout
are fixed in one place. After surgery the model is smaller, runs, and ``generate`` works.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from twossp.adapters import ModelAdapter, ZeroAttention, ZeroMLP, get_adapter
from twossp.plan import PrunePlan
from twossp.remote.pruned_modules import STRUCTURE_FORMAT, apply_structure, record_structure

log = logging.getLogger(__name__)


def keep_ffn_neurons(adapter: ModelAdapter, i: int, keep: list[int] | torch.Tensor) -> None:
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    width = adapter.ffn_width(i)
    if keep.numel() < 1 or int(keep.max()) >= width or keep.unique().numel() != keep.numel():
        raise ValueError(f"block {i}: invalid FFN keep set for width {width}")
    adapter.keep_ffn_neurons(i, keep)


def _drop_norms(block: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(block, name, nn.Identity())


def remove_attention(adapter: ModelAdapter, i: int) -> None:
    """Delete block ``i``'s attention (and the norms that go only with it)."""
    adapter.set_attention(i, ZeroAttention())
    _drop_norms(adapter.blocks[i], adapter.attn_norm_names)


def remove_mlp(adapter: ModelAdapter, i: int) -> None:
    """Delete block ``i``'s MLP (and the norms that go only with it)."""
    adapter.set_mlp(i, ZeroMLP())
    _drop_norms(adapter.blocks[i], adapter.mlp_norm_names)


def remove_blocks(adapter: ModelAdapter, indices: list[int]) -> None:
    """Delete whole blocks and shrink the config to match."""
    drop = set(indices)
    kept = [b for j, b in enumerate(adapter.blocks) if j not in drop]
    config = adapter.config
    layer_types = adapter.layer_types()
    if layer_types is not None:
        config.layer_types = [t for j, t in enumerate(layer_types) if j not in drop]
    adapter.decoder.layers = nn.ModuleList(kept)
    config.num_hidden_layers = len(kept)


def renumber_cache_layers(adapter: ModelAdapter) -> None:
    """Give the remaining attention modules KV-cache slots the cache will serve correctly.

    HF caches read the sequence length from slot 0 and build slot ``s`` for the attention type
    ``config.layer_types[s]`` (full or sliding window). Each remaining attention takes the
    first free slot of its own type, in block order: with one type everywhere that is
    ``0..n-1``; with mixed types no attention lands in a slot of the other kind. A removed
    first attention would otherwise leave slot 0 empty and make ``generate`` restart
    positions at every step.
    """
    present = [i for i in range(adapter.num_blocks) if adapter.has_attention(i)]
    types = adapter.layer_types() or ["attention"] * adapter.num_blocks
    free: dict[str, list[int]] = {}
    for slot, kind in enumerate(types):
        free.setdefault(kind, []).append(slot)
    slots = [free[types[i]].pop(0) for i in present]
    if present and 0 not in slots:
        log.warning(
            "no remaining attention has the type of KV-cache slot 0 (%s); generate with a "
            "cache will misplace positions (perplexity is unaffected)",
            types[0],
        )
    for i, slot in zip(present, slots, strict=True):
        attn = adapter.attention(i)
        if hasattr(attn, "layer_idx"):
            attn.layer_idx = slot


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Apply ``plan`` in place and return the model.

    Indices refer to blocks of the model as passed in. A block losing both attention and
    MLP is removed whole.
    """
    adapter = get_adapter(model)
    n = adapter.num_blocks
    for i in [*plan.ffn_keep, *plan.attention, *plan.mlp, *plan.blocks]:
        if not 0 <= i < n:
            raise ValueError(f"plan names block {i}, model has {n}")
    for i, keep in plan.ffn_keep.items():
        if i not in plan.blocks and adapter.has_mlp(i):
            keep_ffn_neurons(adapter, i, keep)
    whole = set(plan.blocks) | (set(plan.attention) & set(plan.mlp))
    for i in sorted(set(plan.attention) - whole):
        remove_attention(adapter, i)
    for i in sorted(set(plan.mlp) - whole):
        remove_mlp(adapter, i)
    if whole:
        remove_blocks(adapter, sorted(whole))
    _sync_config(adapter)
    renumber_cache_layers(adapter)
    return model


def _sync_config(adapter: ModelAdapter) -> None:
    """Record a uniform FFN width in the config when every remaining MLP shares one."""
    widths = {adapter.ffn_width(i) for i in range(adapter.num_blocks) if adapter.has_mlp(i)}
    if len(widths) == 1 and hasattr(adapter.config, "intermediate_size"):
        adapter.config.intermediate_size = widths.pop()


# --- structure record: lets a pruned checkpoint be rebuilt before its weights load ---------


def structure_of(model: nn.Module) -> dict:
    """How ``model`` differs from the stock model its config builds (see
    :mod:`twossp.remote.pruned_modules`); empty entries when it is a stock architecture.

    The record is checked by replaying it on a fresh skeleton (``meta`` device, no memory).

    Raises:
        ValueError: the model holds modules a record cannot name, or the replay differs.
    """
    structure = record_structure(model, _skeleton(model))
    rebuilt = apply_structure(_skeleton(model), structure)
    problems = _differences(model, rebuilt)
    if problems:
        raise ValueError(
            "the pruned model cannot be rebuilt from its config and structure record: "
            + "; ".join(problems[:5])
        )
    return structure


def is_stock(structure: dict) -> bool:
    """Whether a structure record is empty: the config alone builds the model."""
    return not (structure["modules"] or structure["shapes"] or structure["cache_slots"])


def rebuild_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Reshape a model freshly built from its config so that the pruned weights load.

    ``structure`` is a record from :func:`structure_of`, or the manifest of a folder saved by
    earlier versions (``twossp_structure.json``: removed submodules by block, rotation, all
    shapes), which is converted first.
    """
    if "format" in structure:
        return apply_structure(model, structure)
    apply_structure(model, _from_legacy(model, structure))
    adapter = get_adapter(model)
    _sync_config(adapter)
    renumber_cache_layers(adapter)
    return model


def _skeleton(model: nn.Module) -> nn.Module:
    """A fresh model of ``model``'s class and config, on the ``meta`` device."""
    with torch.device("meta"):
        return type(model)._from_config(copy.deepcopy(model.config))


def _differences(model: nn.Module, other: nn.Module) -> list[str]:
    def kinds(m):
        return {name: type(sub).__name__ for name, sub in m.named_modules()}

    def shapes(m):
        return {name: tuple(t.shape) for name, t in m.state_dict().items()}

    def slots(m):
        return {n: s.layer_idx for n, s in m.named_modules() if hasattr(s, "layer_idx")}

    problems = []
    for what, get in (("module", kinds), ("tensor", shapes), ("cache slot", slots)):
        a, b = get(model), get(other)
        problems += [
            f"{what} {k}: {a.get(k)} vs {b.get(k)}"
            for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)
        ]
    return problems


def _shortcut_names(adapter: ModelAdapter) -> list[str]:
    """(attention, MLP, attention pre-norm, MLP pre-norm) names a ShortcutBlock needs."""
    return [
        adapter.attn_name,
        adapter.mlp_name,
        adapter.attn_norm_names[0],
        adapter.mlp_norm_names[0],
    ]


def _from_legacy(model: nn.Module, manifest: dict) -> dict:
    """The structure record equivalent to an old ``twossp_structure.json`` manifest."""
    adapter = get_adapter(model)
    if adapter.num_blocks != manifest["num_blocks"]:
        raise ValueError("config and structure disagree on the number of blocks")
    prefix = next(name for name, m in model.named_modules() if m is adapter.blocks)
    modules: dict[str, dict] = {}
    rotation = manifest.get("rotation", {})
    for i in rotation.get("shortcut_blocks", []):
        modules[f"{prefix}.{i}"] = {"kind": "ShortcutBlock", "names": _shortcut_names(adapter)}
    for key, kind, name, norms in (
        ("attention_removed", "ZeroAttention", adapter.attn_name, adapter.attn_norm_names),
        ("mlp_removed", "ZeroMLP", adapter.mlp_name, adapter.mlp_norm_names),
    ):
        for i in manifest[key]:
            modules[f"{prefix}.{i}.{name}"] = {"kind": kind}
            for norm in norms:
                modules[f"{prefix}.{i}.{norm}"] = {"kind": "Identity"}
    for name, (mean_dim, eps) in rotation.get("scale_free_norms", {}).items():
        modules[name] = {"kind": "ScaleFreeRMSNorm", "mean_dim": mean_dim, "eps": eps}
    return {
        "format": STRUCTURE_FORMAT,
        "modules": modules,
        "shapes": manifest["shapes"],
        "cache_slots": {},
    }
