"""Method registry: names map to lazy ``"module:Class"`` targets.

Baselines live in the top-level ``baselines`` package and register here by name; nothing is
imported until a method is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing

from twossp.methods.base import PruningMethod

METHODS: dict[str, str] = {
    "dense": "twossp.methods.dense:Dense",
    "twossp": "twossp.methods.twossp:TwoSSP",
    "slicegpt": "baselines.slicegpt:SliceGPT",
    "evopress": "baselines.evopress:EvoPress",
    "shortgpt": "baselines.shortgpt:ShortGPT",
    "window": "baselines.window:SlidingWindow",
    "blockpruner": "baselines.blockpruner:BlockPruner",
}


class UnknownMethodError(ValueError):
    """No method of that name; the message suggests close matches."""


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{hint} Available: {', '.join(sorted(options))}."


def method_class(name: str) -> type[PruningMethod]:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}.{_suggest(name, METHODS)}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_method(name: str, **params) -> PruningMethod:
    """Instantiate method ``name`` with its settings, rejecting unknown settings by name."""
    cls = method_class(name)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = set(params) - fields
    if unknown:
        bad = sorted(unknown)[0]
        raise ValueError(f"method {name!r} has no setting {bad!r}.{_suggest(bad, fields)}")
    return cls(**params)


def settings_schema(name: str) -> type:
    """A dataclass of method ``name``'s settings with their defaults, plus ``name`` itself:
    the single source of every default (the Hydra entry point registers it as the schema
    each ``conf/method/<name>.yaml`` extends)."""
    cls = method_class(name)
    hints = typing.get_type_hints(cls)
    fields = [("name", str, dataclasses.field(default=name))]
    for f in dataclasses.fields(cls):
        default = (
            dataclasses.field(default_factory=f.default_factory)
            if f.default_factory is not dataclasses.MISSING
            else dataclasses.field(default=f.default)
        )
        fields.append((f.name, hints[f.name], default))
    return dataclasses.make_dataclass(f"{cls.__name__}Settings", fields)
