"""The project's Hydra plugins, and the ``${methods:...}`` and ``${paper:...}`` resolvers the
experiment grids use.

Hydra imports every module under ``hydra_plugins`` when it starts (plugin discovery, before
any config is composed), so the resolver registered here is there for every composition:
``experiments/run.py``, ``compose()`` in tests and notebooks, and sweepers alike.

``${methods:all}`` is every registered method and ``${methods:pruning}`` every method that
prunes to a target (all but dense), comma-joined in registry order
(:func:`twossp.methods.registry.method_names`), i.e. a sweep value: a grid written
``method: ${methods:all}`` gains a new method without being edited.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from twossp import paper

_SELECTIONS = ("all", "pruning")


def methods_sweep(selection: str) -> str:
    """The registered methods ``selection`` names (``all`` or ``pruning``), comma-joined.

    Raises:
        ValueError: for any other selection.
    """
    if selection not in _SELECTIONS:
        raise ValueError(f"${{methods:{selection}}}: choose one of {', '.join(_SELECTIONS)}")
    from twossp.methods.registry import method_names  # imports torch: only when resolved

    return ",".join(method_names(pruning_only=selection == "pruning"))


if not OmegaConf.has_resolver("methods"):
    OmegaConf.register_new_resolver("methods", methods_sweep)
# The paper's models, sparsities, corpora and tasks (twossp/paper.py): ${paper:tasks} is a list,
# ${paper_grid:models} a sweep value.
if not OmegaConf.has_resolver("paper"):
    OmegaConf.register_new_resolver("paper", paper.fact)
if not OmegaConf.has_resolver("paper_grid"):
    OmegaConf.register_new_resolver("paper_grid", paper.grid)
