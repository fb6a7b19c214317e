"""Method registry: every pruning method registers by name next to its class.

A method's module decorates its class with ``@register("<name>")``. :func:`load_all` imports
every module of the core's own package (``twossp.methods``) and of each package named in the
``twossp.methods`` entry-point group of pyproject.toml (the ``baselines`` package; a
third-party package can add its own), so a new module in one of them registers without any
list being edited, and the core never names a baseline.

The registry's order (the order grids sweep and tables list methods, :func:`method_names`) is
the order of the methods' modules: the core's, then the entry-point packages by entry-point
name; inside a package, the submodules its ``__all__`` names in that order, then the rest
alphabetically. It does not depend on what was imported first.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import pkgutil
import typing
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

from twossp.methods.base import PruningMethod

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "twossp.methods"

_REGISTERED: dict[str, type[PruningMethod]] = {}
_order: dict[str, int] | None = None  # module -> rank, once load_all ran


class UnknownMethodError(ValueError):
    """No method of that name; the message suggests close matches."""


def register(name: str):
    """Class decorator: make ``cls`` the method called ``name`` (it also sets ``cls.name``).

    Raises:
        TypeError: if the decorated object is not a :class:`PruningMethod` subclass.
        ValueError: if ``name`` is empty or already names a different class.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a method name must be an identifier (conf/method/<name>), got {name!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
            raise TypeError(f"@register({name!r}) needs a PruningMethod subclass, got {cls!r}")
        other = _REGISTERED.get(name)
        # The same class imported again (a module reloaded) re-registers; another class may not.
        if other is not None and _qualified(other) != _qualified(cls):
            raise ValueError(
                f"method name {name!r} is taken by {_qualified(other)}; "
                f"{_qualified(cls)} needs another name"
            )
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _method_packages() -> list[str]:
    """The packages (or modules) of the ``twossp.methods`` entry-point group, by entry-point
    name.

    Every installed distribution is read, not only the first of a name: a stale
    ``twossp.egg-info`` in the checkout (first on ``sys.path`` there) would otherwise hide
    the installed metadata. Metadata that predates the group (pyproject.toml edited, no
    ``pip install -e .`` since) falls back to the checkout's pyproject.toml.
    """
    found = {
        ep.name: ep.value
        for dist in metadata.distributions()
        for ep in dist.entry_points
        if ep.group == ENTRY_POINT_GROUP
    }
    if not found:
        found = _from_pyproject(Path(__file__).resolve().parents[2] / "pyproject.toml")
    return [found[name] for name in sorted(found)]


def _from_pyproject(pyproject: Path) -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no TOML reader in the standard library
        tomllib = None
    if tomllib is not None and pyproject.is_file():
        table = tomllib.loads(pyproject.read_text())
        listed = table.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
        if listed:
            log.warning(
                "no %r entry points installed; read %s (run `pip install -e .` to refresh)",
                ENTRY_POINT_GROUP,
                pyproject,
            )
            return dict(listed)
    log.warning(
        "no %r entry points: only the core's methods are registered; install the project "
        "(`pip install -e .`) to register the baselines",
        ENTRY_POINT_GROUP,
    )
    return {}


def _modules_in_order(target: str) -> list[str]:
    """``target`` and, for a package, every module inside it, each package's modules in the
    order of its ``__all__`` (those it names), then alphabetically; a subpackage's modules
    follow it. Importing them registers their methods."""
    module = importlib.import_module(target.split(":")[0])
    names = [module.__name__]
    if hasattr(module, "__path__"):
        children = {info.name: info.ispkg for info in pkgutil.iter_modules(module.__path__)}
        listed = [n for n in getattr(module, "__all__", ()) if n in children]
        for child in listed + sorted(set(children) - set(listed)):
            names += _modules_in_order(f"{module.__name__}.{child}")
    return names


def load_all() -> None:
    """Import every module of methods (once per process): the core's, then the entry points'.

    Their order, not the order anything happened to import them in, is the registry's."""
    global _order
    if _order is not None:
        return
    order: list[str] = []
    for target in [__package__, *_method_packages()]:
        order += _modules_in_order(target)
    _order = {name: i for i, name in enumerate(order)}


def _ordered() -> list[str]:
    """Registered names by the rank of their module in :func:`load_all`'s order (a class
    registered from elsewhere, e.g. a test, comes after, in registration order)."""
    load_all()
    last = len(_order)
    names = list(_REGISTERED)
    return sorted(
        names, key=lambda n: (_order.get(_REGISTERED[n].__module__, last), names.index(n))
    )


class _Methods(Mapping):
    """``{name: class}`` of every registered method in registry order; loads on first use."""

    def __getitem__(self, name: str) -> type[PruningMethod]:
        load_all()
        return _REGISTERED[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_ordered())

    def __len__(self) -> int:
        load_all()
        return len(_REGISTERED)

    def __contains__(self, name: object) -> bool:
        load_all()
        return name in _REGISTERED

    def __repr__(self) -> str:
        return f"METHODS({', '.join(self)})"


METHODS: Mapping[str, type[PruningMethod]] = _Methods()


def method_names(pruning_only: bool = False) -> list[str]:
    """Every registered method's name, in registration order (dense, 2SSP, then the baselines
    as the paper's tables list them). ``pruning_only`` leaves out methods that do not prune to
    a target (``uses_sparsity`` False: dense)."""
    return [name for name, cls in METHODS.items() if cls.uses_sparsity or not pruning_only]


def method_class(name: str) -> type[PruningMethod]:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}.{_suggest(name, METHODS)}")
    return METHODS[name]


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{hint} Available: {', '.join(sorted(options))}."


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
