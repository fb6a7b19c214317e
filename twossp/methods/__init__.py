"""Pruning methods: the 2SSP method, the dense reference, and the registry."""

from twossp.methods.base import PruneContext, PruningMethod
from twossp.methods.registry import (
    METHODS,
    UnknownMethodError,
    build_method,
    method_class,
    method_names,
    register,
)

__all__ = [
    "METHODS",
    "PruneContext",
    "PruningMethod",
    "UnknownMethodError",
    "build_method",
    "method_class",
    "method_names",
    "register",
]
