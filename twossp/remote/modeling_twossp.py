"""Pruned causal LMs saved by twossp: the stock model of each family, reshaped before loading.

Each class builds its family's stock model from the config, then applies the config's
``twossp_structure`` (removed attention / MLP submodules, per-block FFN widths, SliceGPT's
shortcut blocks and scale-free norms; see ``pruned_modules.py``), so that the checkpoint's
weights load into modules of the right kinds and shapes. Forward passes, generation and the
KV cache are the stock ones. Needs torch and transformers only.
"""

from transformers import (
    Gemma2ForCausalLM,
    LlamaForCausalLM,
    MistralForCausalLM,
    Olmo2ForCausalLM,
    Phi3ForCausalLM,
    PhiForCausalLM,
    Qwen2ForCausalLM,
)

from .configuration_twossp import (
    TwosspGemma2Config,
    TwosspLlamaConfig,
    TwosspMistralConfig,
    TwosspOlmo2Config,
    TwosspPhi3Config,
    TwosspPhiConfig,
    TwosspQwen2Config,
)
from .pruned_modules import STRUCTURE_KEY, apply_structure


class PrunedMixin:
    """Applies ``config.twossp_structure`` right after the stock model is built."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_structure(self, getattr(config, STRUCTURE_KEY))


class TwosspLlamaForCausalLM(PrunedMixin, LlamaForCausalLM):
    config_class = TwosspLlamaConfig


class TwosspMistralForCausalLM(PrunedMixin, MistralForCausalLM):
    config_class = TwosspMistralConfig


class TwosspQwen2ForCausalLM(PrunedMixin, Qwen2ForCausalLM):
    config_class = TwosspQwen2Config


class TwosspPhi3ForCausalLM(PrunedMixin, Phi3ForCausalLM):
    config_class = TwosspPhi3Config


class TwosspPhiForCausalLM(PrunedMixin, PhiForCausalLM):
    config_class = TwosspPhiConfig


class TwosspGemma2ForCausalLM(PrunedMixin, Gemma2ForCausalLM):
    config_class = TwosspGemma2Config


class TwosspOlmo2ForCausalLM(PrunedMixin, Olmo2ForCausalLM):
    config_class = TwosspOlmo2Config
