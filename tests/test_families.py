"""One family table (twossp/remote/families.py) and everything that lists families agree:
the adapter registry, the pruned classes saved folders ship, the tiny test configs and the
model configs in conf/model/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from tests.conftest import compose_config
from twossp import remote
from twossp.adapters import SUPPORTED_MODEL_TYPES, adapter_class
from twossp.modeling import ModelSpec, load_model, save_pruned
from twossp.plan import PrunePlan
from twossp.remote.configuration_twossp import PRUNED_CONFIGS
from twossp.remote.families import FAMILIES as TABLE
from twossp.remote.families import PRUNED_PREFIX, pruned_names
from twossp.remote.modeling_twossp import PRUNED_MODELS
from twossp.surgery import apply_plan
from twossp.testing import FAMILIES, tiny_config, tiny_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_KEYS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
IDS = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(1))

# The auto_map names folders saved so far carry: they must keep naming the same classes.
SAVED_NAMES = {
    "llama": ("TwosspLlamaConfig", "TwosspLlamaForCausalLM"),
    "mistral": ("TwosspMistralConfig", "TwosspMistralForCausalLM"),
    "qwen2": ("TwosspQwen2Config", "TwosspQwen2ForCausalLM"),
    "phi3": ("TwosspPhi3Config", "TwosspPhi3ForCausalLM"),
    "phi": ("TwosspPhiConfig", "TwosspPhiForCausalLM"),
    "gemma2": ("TwosspGemma2Config", "TwosspGemma2ForCausalLM"),
    "olmo2": ("TwosspOlmo2Config", "TwosspOlmo2ForCausalLM"),
}


def test_every_table_family_has_an_adapter_and_every_adapter_a_table_entry():
    assert set(SUPPORTED_MODEL_TYPES) == set(TABLE)


def test_the_tiny_test_families_are_the_table():
    assert FAMILIES == tuple(TABLE)


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_each_adapter_gives_tiny_settings_for_exactly_its_model_types(model_type):
    cls = adapter_class(model_type)
    assert set(cls.tiny_configs) == set(cls.model_types), cls.__qualname__


def test_the_table_names_the_classes_transformers_registers_for_each_model_type():
    for family, (config, model) in TABLE.items():
        assert CONFIG_MAPPING_NAMES[family] == config
        assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family] == model


def test_a_tiny_config_is_its_familys_stock_config(family):
    config = tiny_config(family)
    assert config.model_type == family and type(config).__name__ == TABLE[family][0]
    assert config.num_hidden_layers == 4 and config.hidden_size == 64


def test_a_family_outside_the_table_has_no_tiny_config():
    with pytest.raises(ValueError, match="unknown family 'gpt2'"):
        tiny_config("gpt2")


def test_every_family_has_a_pruned_config_and_model_under_the_names_saved_folders_use():
    assert set(PRUNED_CONFIGS) == set(PRUNED_MODELS) == set(TABLE)
    assert set(SAVED_NAMES) <= set(TABLE)  # a family is never dropped from the table
    for family, (config_name, model_name) in SAVED_NAMES.items():
        assert pruned_names(family) == (config_name, model_name)
        config, model = PRUNED_CONFIGS[family], PRUNED_MODELS[family]
        assert (config.__name__, model.__name__) == (config_name, model_name)
        assert config.model_type == f"{PRUNED_PREFIX}{family}"
        assert model.config_class is config
        assert type(tiny_config(family)) in config.__mro__  # the stock class, renamed


def test_the_shipped_files_import_only_torch_transformers_and_each_other():
    """They run inside saved folders, where twossp may not be installed."""
    shipped = {p.stem for p in remote.source_files()}
    assert {"families", "configuration_twossp", "modeling_twossp", "pruned_modules"} <= shipped
    for path in remote.source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must be another shipped file
                    assert node.module in shipped, f"{path.name} imports .{node.module}"
                    continue
                names = [node.module]
            else:
                continue
            roots = {n.split(".")[0] for n in names}
            assert roots <= {"torch", "transformers", "__future__"}, f"{path.name}: {roots}"


def test_the_pruned_classes_exist_as_module_attributes_for_auto_map():
    from twossp.remote import configuration_twossp as configs
    from twossp.remote import modeling_twossp as models

    for config_name, model_name in SAVED_NAMES.values():
        assert getattr(configs, config_name).__module__ == configs.__name__
        assert getattr(models, model_name).__module__ == models.__name__


def test_a_custom_code_folder_ships_the_table_and_loads_without_twossp(family, tmp_path):
    model = tiny_model(family)
    apply_plan(model, PrunePlan(attention=[1], blocks=[0]))  # a removed attention: custom code
    save_pruned(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config_name, model_name = SAVED_NAMES.get(family, pruned_names(family))
    assert config["auto_map"] == {
        "AutoConfig": f"configuration_twossp.{config_name}",
        "AutoModelForCausalLM": f"modeling_twossp.{model_name}",
    }
    assert {p.name for p in remote.source_files()} <= {p.name for p in tmp_path.glob("*.py")}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(loaded).__name__ == model_name
    assert torch.equal(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits)
    ours, _ = load_model(ModelSpec(str(tmp_path), device="cpu"), with_tokenizer=False)
    assert torch.equal(ours(input_ids=IDS).logits, model(input_ids=IDS).logits)


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_every_model_config_declares_a_family_an_adapter_handles(key):
    """Offline: the family is declared in conf/model/<key>.yaml, not read from the hub."""
    cfg = compose_config(f"model={key}")
    assert cfg.model.key == key
    assert cfg.model.get("model_type") in SUPPORTED_MODEL_TYPES, (
        f"conf/model/{key}.yaml: model_type must be one of {SUPPORTED_MODEL_TYPES}"
    )


def test_the_new_families_have_model_configs_with_their_hub_ids():
    ids = {key: compose_config(f"model={key}").model for key in ("olmo2_7b", "gemma2_9b")}
    assert ids["olmo2_7b"].name_or_path == "allenai/OLMo-2-1124-7B"
    assert ids["gemma2_9b"].name_or_path == "google/gemma-2-9b"
    assert [m.model_type for m in ids.values()] == ["olmo2", "gemma2"]


def test_a_model_config_declaring_an_unknown_family_is_refused_by_name():
    from twossp.config import to_run_spec

    cfg = compose_config("model=llama2_7b", "model.model_type=gpt2")
    with pytest.raises(ValueError, match="model 'llama2_7b' declares model_type 'gpt2'"):
        to_run_spec(cfg)
