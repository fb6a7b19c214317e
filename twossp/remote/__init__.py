"""Files copied into pruned checkpoint folders so that stock transformers can load them.

``families.py`` (the family table, no imports), ``pruned_modules.py`` (torch only),
``configuration_twossp.py`` and ``modeling_twossp.py`` (torch and transformers) never import
twossp: :func:`twossp.modeling.save_pruned` copies them verbatim, and the package imports
its stand-in modules from ``pruned_modules`` and its family list from ``families``.
"""

from pathlib import Path

FILES = ("configuration_twossp.py", "modeling_twossp.py", "pruned_modules.py", "families.py")


def source_files() -> list[Path]:
    """The files a custom-code pruned folder ships."""
    return [Path(__file__).with_name(name) for name in FILES]
