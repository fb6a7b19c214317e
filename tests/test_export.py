"""Pruned folders load in stock transformers exactly, or not at all; export and hub upload.

That every method's folder reloads to identical logits on every family is part of the method
contract (tests/test_method_contract.py); here: folder formats, export and upload."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_model as save_safetensors
from transformers import AutoModelForCausalLM

from baselines.slicegpt.modules import ScaleFreeRMSNorm, ShortcutBlock
from tests.conftest import TASKS, needs_shared
from tests.test_method_contract import quick
from twossp.adapters import get_adapter
from twossp.export import NotReplayableError, export
from twossp.methods import PruneContext, build_method
from twossp.modeling import STRUCTURE_FILE, ModelSpec, load_model, save_pruned
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan
from twossp.testing import tiny_mixed_window_qwen2, tiny_model

SPARSITY = 0.375
IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
CALIB = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run 10-30x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prune(name: str, family: str):
    model = tiny_model(family)
    method = quick(name)
    if name == "slicegpt":
        try:
            method.check(model, SPARSITY)
        except ValueError as err:  # refused by name (phi)
            pytest.skip(str(err))
    method.prune(model, PruneContext(SPARSITY, CALIB, seed=0, progress=False))
    return model


def _greedy(model, n=4):
    return model.generate(IDS[:1, :5], max_new_tokens=n, do_sample=False)


def _custom(folder) -> bool:
    return "auto_map" in json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("family", ["llama", "qwen2_windows"])
def test_stock_architecture_with_narrower_ffn_saves_a_plain_config(family, tmp_path):
    if family == "qwen2_windows":  # blocks 0-1 full attention, 2-3 sliding window
        model = tiny_mixed_window_qwen2()
    else:
        model = tiny_model(family)
    width = get_adapter(model).ffn_width(0)
    keep = list(range(0, width, 2))
    apply_plan(model, PrunePlan(ffn_keep={i: keep for i in range(4)}, blocks=[1]))
    save_pruned(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert not _custom(tmp_path) and not list(tmp_path.glob("*.py"))
    assert config["intermediate_size"] == len(keep) and config["num_hidden_layers"] == 3
    assert config.get("layer_types") == getattr(model.config, "layer_types", None)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(input_ids=IDS).logits, model(input_ids=IDS).logits)
    assert torch.equal(_greedy(loaded, 8), _greedy(model, 8))


def test_device_map_spread_model_saves_and_reloads_equal(tmp_path):
    from accelerate import dispatch_model

    model = tiny_model("llama")
    apply_plan(model, PrunePlan(ffn_keep={2: list(range(0, 160, 2))}, attention=[1], blocks=[0]))
    expected = model(input_ids=IDS).logits
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
        "model.layers.0": "disk",
        "model.layers.1": "cpu",
        "model.layers.2": "disk",
    }
    spread = dispatch_model(
        copy.deepcopy(model), device_map, main_device="cpu", offload_dir=str(tmp_path / "off")
    )
    assert next(get_adapter(spread).blocks[2].parameters()).device.type == "meta"
    with pytest.warns(UserWarning, match="offloaded"):
        save_pruned(spread, tmp_path / "out")
    assert _custom(tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True)
    assert torch.equal(loaded(input_ids=IDS).logits, expected)
    ours, _ = load_model(
        ModelSpec(str(tmp_path / "out"), device="cpu", device_map="auto"), with_tokenizer=False
    )
    assert torch.equal(ours(input_ids=IDS).logits, expected)


def _save_like_earlier_versions(model, folder):
    """The folder format before save_pretrained: one file, a manifest beside the config."""
    a = get_adapter(model)
    manifest = {
        "num_blocks": a.num_blocks,
        "attention_removed": [i for i in range(a.num_blocks) if not a.has_attention(i)],
        "mlp_removed": [i for i in range(a.num_blocks) if not a.has_mlp(i)],
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
    }
    blocks = [i for i in range(a.num_blocks) if isinstance(a.blocks[i], ShortcutBlock)]
    if blocks:
        norms = {
            n: [m.mean_dim, m.eps]
            for n, m in model.named_modules()
            if isinstance(m, ScaleFreeRMSNorm)
        }
        manifest["rotation"] = {"shortcut_blocks": blocks, "scale_free_norms": norms}
    folder.mkdir()
    model.config.save_pretrained(folder)
    save_safetensors(model, str(folder / "model.safetensors"))
    (folder / STRUCTURE_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["twossp", "blockpruner", "slicegpt"])
def test_folders_of_earlier_versions_still_load(name, tmp_path):
    model = _prune(name, "llama")
    _save_like_earlier_versions(model, tmp_path / "old")
    ours, _ = load_model(ModelSpec(str(tmp_path / "old"), device="cpu"), with_tokenizer=False)
    assert [type(m) for m in ours.modules()] == [type(m) for m in model.modules()]
    assert torch.equal(ours(input_ids=IDS).logits, model(input_ids=IDS).logits)
    assert torch.equal(_greedy(ours), _greedy(model))


def test_save_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a model folder"):
        save_pruned(tiny_model("llama"), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_save_refuses_modules_a_record_cannot_name(tmp_path):
    model = tiny_model("llama")
    get_adapter(model).set_mlp(0, torch.nn.Sequential())
    with pytest.raises(ValueError, match="Sequential"):
        save_pruned(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _base_and_plan(tmp_path, name="twossp", family="llama"):
    base = tiny_model(family)
    base.save_pretrained(tmp_path / "base")
    pruned = copy.deepcopy(base)
    plan = quick(name).prune(pruned, PruneContext(SPARSITY, CALIB, seed=0, progress=False))
    plan.save(tmp_path / "plans" / "abc123.json")
    return pruned, tmp_path / "plans" / "abc123.json"


def test_export_cli_writes_a_loadable_folder_from_a_plan(tmp_path):
    from twossp.export import main

    pruned, plan = _base_and_plan(tmp_path)
    out = main(
        ["--plan", str(plan), "--model", str(tmp_path / "base"), "--out", str(tmp_path / "o")]
    )
    assert _custom(out) and "trust_remote_code=True" in (out / "README.md").read_text()
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert torch.equal(loaded(input_ids=IDS).logits, pruned(input_ids=IDS).logits)


def test_export_refuses_a_slicegpt_plan_before_loading(tmp_path):
    plan = PrunePlan(info={"hidden_dim": 40, "hidden_size": 64}, replayable=False)
    plan.save(tmp_path / "p.json")
    with pytest.raises(NotReplayableError, match="save_model=true"):
        export(tmp_path / "p.json", "/no/such/model", tmp_path / "out")
    PrunePlan(blocks=[1]).save(tmp_path / "plans" / "x.json")
    with pytest.raises(ValueError, match="--model"):  # no run file to name the base model
        export(tmp_path / "plans" / "x.json", None, tmp_path / "out")


def test_push_to_hub_uploads_the_exported_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    def fake_create_repo(repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def fake_upload_folder(**kw):
        calls["upload"] = kw
        calls["files"] = sorted(p.name for p in (tmp_path / "o").iterdir())

    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    _, plan = _base_and_plan(tmp_path, "shortgpt")
    export(plan, str(tmp_path / "base"), tmp_path / "o", push_to_hub="me/tiny-pruned", private=True)
    assert calls["create"] == ("me/tiny-pruned", {"private": True, "exist_ok": True, "token": None})
    assert calls["upload"]["repo_id"] == "me/tiny-pruned"
    assert calls["upload"]["folder_path"] == str(tmp_path / "o")
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md"} <= set(
        calls["files"]
    )


def _local_arc_easy(folder):
    """arc_easy from the shared task files, indexed alone (the full lm-eval index takes ~30 s)."""
    from pathlib import Path

    import lm_eval
    import yaml
    from lm_eval.tasks import TaskManager

    from twossp.evaluation.local_tasks import local_data_files, local_task_config

    stock_yaml = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    files = local_data_files(TASKS, ["arc_easy"])["arc_easy"]
    cfg = local_task_config("arc_easy", yaml.safe_load(stock_yaml.read_text()), files, stock_yaml)
    folder.mkdir()
    (folder / "arc_easy.yaml").write_text(yaml.safe_dump(cfg))
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    task = manager.load(["arc_easy"])["tasks"]["arc_easy"]
    assert task.config.dataset_path == "json"  # the local file, not the hub
    return task, manager


@needs_shared()
def test_lm_eval_runs_a_stories260k_2ssp_folder_by_path(stories_path, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = load_model(ModelSpec(str(stories_path), device="cpu"))
    calib = torch.randint(3, 512, (4, 64), generator=torch.Generator().manual_seed(0))
    build_method("twossp", n_calib_stage1=4).prune(
        model, PruneContext(SPARSITY, calib, seed=0, progress=False)
    )
    save_pruned(model, tmp_path / "model", tokenizer)
    assert _custom(tmp_path / "model")
    task, manager = _local_arc_easy(tmp_path / "tasks")
    lm = HFLM(
        pretrained=str(tmp_path / "model"), trust_remote_code=True, batch_size=2, device="cpu"
    )
    torch.testing.assert_close(
        lm.model(input_ids=IDS).logits, model(input_ids=IDS).logits, rtol=0, atol=1e-5
    )
    out = lm_eval.simple_evaluate(lm, tasks=[task], limit=2, task_manager=manager)
    assert out["n-samples"]["arc_easy"]["effective"] == 2
    assert 0 <= out["results"]["arc_easy"]["acc,none"] <= 1


@needs_shared()
def test_export_reads_the_base_model_from_the_run_beside_the_plan(tmp_path):
    from tests.conftest import run_spec
    from twossp.export import main
    from twossp.pipeline import run
    from twossp.results import plan_path

    spec = run_spec(
        f"paths.results_dir={tmp_path}",
        "method=twossp",
        "sparsity=0.375",
        "eval.use=[wikitext2]",
        "eval.max_windows=1",
        "calib.n_samples=4",
        "calib.seqlen=128",
        "progress=false",
        "save_model=true",
    )
    assert run(spec).status == "done"
    plan = plan_path(tmp_path, spec.config_hash)
    out = main(["--plan", str(plan), "--out", str(tmp_path / "exported")])
    saved = AutoModelForCausalLM.from_pretrained(spec.save_model_dir, trust_remote_code=True)
    exported = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    ids = torch.randint(3, 500, (1, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(exported(input_ids=ids).logits, saved(input_ids=ids).logits)
    assert (out / "tokenizer_config.json").exists()
