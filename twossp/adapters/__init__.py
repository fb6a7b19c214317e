"""Architecture adapters, looked up by ``config.model_type``."""

from __future__ import annotations

from torch import nn

from twossp.adapters.base import ModelAdapter, ZeroAttention, ZeroMLP
from twossp.adapters.gemma2 import Gemma2Adapter
from twossp.adapters.llama import LlamaAdapter
from twossp.adapters.olmo2 import Olmo2Adapter
from twossp.adapters.phi import PhiAdapter
from twossp.adapters.phi3 import Phi3Adapter

_ADAPTERS: dict[str, type[ModelAdapter]] = {
    model_type: cls
    for cls in (LlamaAdapter, Phi3Adapter, PhiAdapter, Gemma2Adapter, Olmo2Adapter)
    for model_type in cls.model_types
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_ADAPTERS))


class UnsupportedArchitectureError(ValueError):
    """Raised when no adapter knows a ``model_type``."""


def adapter_class(model_type: str) -> type[ModelAdapter]:
    """The adapter class for ``model_type``; fails listing the supported ones."""
    try:
        return _ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Wrap ``model`` in the adapter of its architecture family."""
    return adapter_class(model.config.model_type)(model)


__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ModelAdapter",
    "UnsupportedArchitectureError",
    "ZeroAttention",
    "ZeroMLP",
    "adapter_class",
    "get_adapter",
]
