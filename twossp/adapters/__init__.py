"""Architecture adapters, looked up by ``config.model_type``.

Every module of this package is imported once and every :class:`ModelAdapter` subclass it
defines registers the ``model_types`` it declares: a new family's adapter is a new module
here (or a model_type added to an existing adapter), with no list to edit. Each registered
model_type is a family of ``twossp/remote/families.py`` (``tests/test_families.py`` checks).
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from twossp.adapters.base import ModelAdapter, ZeroAttention, ZeroMLP


class UnsupportedArchitectureError(ValueError):
    """Raised when no adapter knows a ``model_type``."""


def _discover() -> dict[str, type[ModelAdapter]]:
    """model_type -> adapter class, from every module of this package.

    Raises:
        ValueError: two adapter classes claim the same model_type.
    """
    adapters: dict[str, type[ModelAdapter]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for cls in vars(module).values():
            # Only classes defined in that module: a subclass imports its parent too.
            if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
                continue
            if cls.__module__ != module.__name__:
                continue
            for model_type in cls.model_types:
                other = adapters.setdefault(model_type, cls)
                if other is not cls:
                    raise ValueError(
                        f"model_type {model_type!r} is claimed by both {other.__qualname__} "
                        f"and {cls.__qualname__}; each model_type needs one adapter"
                    )
    return adapters


_ADAPTERS: dict[str, type[ModelAdapter]] = _discover()

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_ADAPTERS))


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
