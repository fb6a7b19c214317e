"""Pruned causal LMs saved by twossp: the stock model of each family, reshaped before loading.

Each class builds its family's stock model from the config, then applies the config's
``twossp_structure`` (removed attention / MLP submodules, per-block FFN widths, SliceGPT's
shortcut blocks and scale-free norms; see ``pruned_modules.py``), so that the checkpoint's
weights load into modules of the right kinds and shapes. Forward passes, generation and the
KV cache are the stock ones. Needs torch and transformers only.

The classes are made from the family table (``families.py``), one per family, under the
names ``auto_map`` gives them (``TwosspLlamaForCausalLM``, ``TwosspGemma2ForCausalLM``, ...).
"""

import transformers

from .configuration_twossp import PRUNED_CONFIGS
from .families import FAMILIES, pruned_names
from .pruned_modules import STRUCTURE_KEY, apply_structure


class PrunedMixin:
    """Applies ``config.twossp_structure`` right after the stock model is built."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_structure(self, getattr(config, STRUCTURE_KEY))


def _pruned_model(family: str) -> type:
    """``family``'s stock causal LM, reshaped by the structure record, on its pruned config."""
    stock = getattr(transformers, FAMILIES[family][1])
    name = pruned_names(family)[1]
    attributes = {
        "config_class": PRUNED_CONFIGS[family],
        "__module__": __name__,
        "__qualname__": name,
    }
    return type(name, (PrunedMixin, stock), attributes)


# Stock model_type -> the causal LM of its pruned variant.
PRUNED_MODELS: dict[str, type] = {family: _pruned_model(family) for family in FAMILIES}
# Module attributes under their own names: auto_map looks them up there.
globals().update({cls.__name__: cls for cls in PRUNED_MODELS.values()})

__all__ = ["PRUNED_MODELS", "PrunedMixin", *(c.__name__ for c in PRUNED_MODELS.values())]
