"""Configurations of pruned models saved by twossp (https://arxiv.org/abs/2501.17771 harness).

Each class is its family's stock configuration under its own ``model_type``
(``twossp_<family>``), which stock transformers does not know: a folder using it loads only
with ``trust_remote_code=True`` (through this file's ``auto_map``), never as a plain model
with random weights where modules were removed. The structure of the pruned model is the
``twossp_structure`` entry of ``config.json`` (see ``pruned_modules.py``).

The classes are made from the family table (``families.py``), one per family, under the
names ``auto_map`` gives them (``TwosspLlamaConfig``, ``TwosspGemma2Config``, ...).
"""

import transformers

from .families import FAMILIES, PRUNED_PREFIX, pruned_names


def _pruned_config(family: str) -> type:
    """``family``'s stock configuration class under ``model_type`` ``twossp_<family>``."""
    stock = getattr(transformers, FAMILIES[family][0])
    name = pruned_names(family)[0]
    attributes = {
        "model_type": PRUNED_PREFIX + family,
        "__module__": __name__,
        "__qualname__": name,
    }
    return type(name, (stock,), attributes)


# Stock model_type -> the configuration of its pruned variant.
PRUNED_CONFIGS: dict[str, type] = {family: _pruned_config(family) for family in FAMILIES}
# Module attributes under their own names: auto_map looks them up there.
globals().update({cls.__name__: cls for cls in PRUNED_CONFIGS.values()})

__all__ = ["PRUNED_CONFIGS", "PRUNED_PREFIX", *(c.__name__ for c in PRUNED_CONFIGS.values())]
