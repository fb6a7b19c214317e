"""The architecture families twossp supports: the one table every family list is read from.

Each entry maps a family's stock ``model_type`` to the names of its stock configuration and
causal-LM classes in ``transformers``. From it come the pruned classes a saved folder ships
(``configuration_twossp.py`` and ``modeling_twossp.py`` beside this file: ``Twossp<Config>``
under ``model_type`` ``twossp_<family>``, and ``Twossp<CausalLM>``), the families the adapter
registry must cover (:mod:`twossp.adapters`) and the tiny test models
(:mod:`twossp.testing`); ``tests/test_families.py`` checks they agree.

This file is copied into every custom-code pruned folder, so it imports nothing: plain names
only. The class names it gives are written into saved folders' ``config.json`` (``auto_map``),
so an entry's names never change once a folder may have been saved with them.
"""

# Stock model_type -> (stock configuration class, stock causal-LM class) in transformers.
FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "phi": ("PhiConfig", "PhiForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM"),
}

# A pruned folder's model_type is this prefix and its family's stock model_type.
PRUNED_PREFIX = "twossp_"


def pruned_names(family: str) -> tuple[str, str]:
    """``(configuration class, causal-LM class)`` names of ``family``'s pruned variant, as
    ``auto_map`` names them (``TwosspLlamaConfig``, ``TwosspLlamaForCausalLM``).

    Raises:
        KeyError: ``family`` is not in :data:`FAMILIES` (the message lists those that are).
    """
    if family not in FAMILIES:
        raise KeyError(f"no family {family!r}; known: {', '.join(FAMILIES)}")
    config, model = FAMILIES[family]
    return f"Twossp{config}", f"Twossp{model}"
