"""Optional dependencies (pyproject extras) and the one message a missing one gives."""

from __future__ import annotations

import importlib.util


class MissingExtraError(ImportError):
    """An optional dependency this run needs is not installed."""


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming the pip extra when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{what} needs the {module!r} package: pip install 'twossp[{extra}]' "
            "(or pip install -e '.[all]' in a checkout)"
        )
