"""lm-eval downstream tasks: local data wiring, result rows, and a real offline run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TASKS, needs_shared
from twossp.evaluation.downstream import (
    PAPER_TASKS,
    DownstreamSpec,
    local_data_files,
    point_at_local,
    spec_from_dict,
    to_metrics,
)


def _write(path, rows=({"q": 1},)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_local_data_files_plain_task_and_group_members(tmp_path):
    _write(tmp_path / "arc_easy" / "test.jsonl")
    for sub in ("anatomy", "astronomy"):
        for split in ("test", "dev"):
            _write(tmp_path / "mmlu" / sub / f"{split}.jsonl")
    files = local_data_files(tmp_path, ["arc_easy", "mmlu"])
    assert files["arc_easy"] == {"test": str(tmp_path / "arc_easy" / "test.jsonl")}
    assert set(files) == {"arc_easy", "mmlu_anatomy", "mmlu_astronomy"}
    assert set(files["mmlu_anatomy"]) == {"dev", "test"}


def test_missing_local_task_is_named_before_any_work(tmp_path):
    _write(tmp_path / "arc_easy" / "test.jsonl")
    spec = DownstreamSpec(tasks=["arc_easy", "piqa"], local_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="piqa.*arc_easy"):
        spec.check()


@pytest.mark.parametrize(
    "bad, match",
    [({"tasks": []}, "empty"), ({"num_fewshot": -1}, "num_fewshot"), ({"limit": 0}, "limit")],
)
def test_spec_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        DownstreamSpec(**bad).check()


def test_spec_from_dict_names_unknown_setting():
    assert spec_from_dict(None) is None
    assert spec_from_dict({"limit": 3}).tasks == list(PAPER_TASKS)
    with pytest.raises(ValueError, match="limt"):
        spec_from_dict({"limt": 3})


def test_point_at_local_changes_only_the_data_source():
    stock = {
        "task": "arc_easy",
        "dataset_path": "allenai/ai2_arc",
        "dataset_name": "ARC-Easy",
        "training_split": "train",
        "validation_split": "validation",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "metadata": {"version": 1.0},
    }
    cfg = point_at_local(dict(stock), {"test": "/x/test.jsonl"})
    assert cfg["dataset_path"] == "json" and "dataset_name" not in cfg
    assert cfg["dataset_kwargs"] == {"data_files": {"test": "/x/test.jsonl"}}
    assert cfg["training_split"] is None and cfg["validation_split"] is None  # not local
    assert cfg["test_split"] == "test"
    assert cfg["doc_to_text"] == stock["doc_to_text"] and cfg["metadata"] == stock["metadata"]


def test_to_metrics_reads_group_acc_versions_and_samples():
    out = {
        "results": {
            "arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.25, "acc_stderr,none": "N/A"},
            "winogrande": {"acc,none": 0.75},
            "mmlu": {"acc,none": 0.3},
        },
        "versions": {"arc_easy": 1.0, "winogrande": 1.0, "mmlu": "2"},
        "n-shot": {"arc_easy": 0, "winogrande": 0},
        "n-samples": {
            "arc_easy": {"effective": 4},
            "winogrande": {"effective": 4},
            "mmlu_a": {"effective": 3},
            "mmlu_b": {"effective": 2},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_a", "mmlu_b"]},
    }
    spec = DownstreamSpec(tasks=["arc_easy", "winogrande", "mmlu"], limit=4)
    rows = {(m.metric, m.dataset): m for m in to_metrics(out, spec)}
    assert set(rows) == {
        ("acc", "arc_easy"),
        ("acc_norm", "arc_easy"),
        ("acc", "winogrande"),
        ("acc", "mmlu"),
    }
    assert rows[("acc_norm", "arc_easy")].value == 0.25
    mmlu = rows[("acc", "mmlu")].variant
    assert mmlu["task_version"] == "2" and mmlu["samples"] == 5 and mmlu["subtasks"] == 2
    assert mmlu["limit"] == 4 and mmlu["source"] == "hub"


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_stories260k_on_local_stock_tasks_offline(stories_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twossp.evaluation.downstream import evaluate_tasks

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    model = AutoModelForCausalLM.from_pretrained(stories_path)
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    spec = DownstreamSpec(
        tasks=["arc_easy", "winogrande", "mmlu"], limit=1, batch_size=64, local_dir=str(TASKS)
    )
    rows = {(m.metric, m.dataset): m for m in evaluate_tasks(model, tokenizer, spec)}

    assert set(rows) == {
        ("acc", "arc_easy"),
        ("acc_norm", "arc_easy"),
        ("acc", "winogrande"),
        ("acc", "mmlu"),
    }
    for m in rows.values():
        assert 0.0 <= m.value <= 1.0
        assert m.variant["source"] == f"local:{TASKS}"
        assert m.variant["num_fewshot"] == 0 and m.variant["limit"] == 1
    assert rows[("acc", "arc_easy")].variant["task_version"] == "1.0"
    assert rows[("acc", "mmlu")].variant["task_version"] == "2"  # the group's version
    assert rows[("acc", "mmlu")].variant["subtasks"] == 57
    assert rows[("acc", "mmlu")].variant["samples"] == 57  # one document per subject
    assert not model.training
