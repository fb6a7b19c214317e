"""Configurations of pruned models saved by twossp (https://arxiv.org/abs/2501.17771 harness).

Each class is its family's stock configuration under its own ``model_type``
(``twossp_<family>``), which stock transformers does not know: a folder using it loads only
with ``trust_remote_code=True`` (through this file's ``auto_map``), never as a plain model
with random weights where modules were removed. The structure of the pruned model is the
``twossp_structure`` entry of ``config.json`` (see ``pruned_modules.py``).
"""

from transformers import (
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
)


class TwosspLlamaConfig(LlamaConfig):
    model_type = "twossp_llama"


class TwosspMistralConfig(MistralConfig):
    model_type = "twossp_mistral"


class TwosspQwen2Config(Qwen2Config):
    model_type = "twossp_qwen2"


class TwosspPhi3Config(Phi3Config):
    model_type = "twossp_phi3"


class TwosspPhiConfig(PhiConfig):
    model_type = "twossp_phi"


class TwosspGemma2Config(Gemma2Config):
    model_type = "twossp_gemma2"


class TwosspOlmo2Config(Olmo2Config):
    model_type = "twossp_olmo2"


PRUNED_PREFIX = "twossp_"
# Stock model_type -> the configuration of its pruned variant.
PRUNED_CONFIGS = {
    cls.model_type.removeprefix(PRUNED_PREFIX): cls
    for cls in (
        TwosspLlamaConfig,
        TwosspMistralConfig,
        TwosspOlmo2Config,
        TwosspQwen2Config,
        TwosspPhi3Config,
        TwosspPhiConfig,
        TwosspGemma2Config,
        TwosspOlmo2Config,
    )
}
