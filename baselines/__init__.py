"""The five baseline pruning methods; each module registers its method (``@register``).

``__all__`` orders the registry's baselines (the order the experiment grids sweep and the
tables list them): the 2SSP paper's Table 1 order. A module added to this package registers
without being listed here, after these.
"""

__all__ = ["shortgpt", "window", "blockpruner", "evopress", "slicegpt"]
