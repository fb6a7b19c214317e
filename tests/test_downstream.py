"""lm-eval downstream tasks: local data wiring, result rows, and a real offline run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TASKS, needs_shared
from twossp.evaluation.downstream import (
    DEFAULT_BOOTSTRAP_ITERS,
    PAPER_TASKS,
    Z95,
    DownstreamSpec,
    accuracy_interval,
    document_ids,
    lm_eval_record,
    save_lm_eval_json,
    spec_from_dict,
    to_metrics,
)
from twossp.evaluation.local_tasks import local_data_files, local_task_config


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
    # one member of a group, asked for by its lm-eval name
    assert local_data_files(tmp_path, ["mmlu_astronomy"]) == {
        "mmlu_astronomy": files["mmlu_astronomy"]
    }


def test_missing_local_task_is_named_before_any_work(tmp_path):
    _write(tmp_path / "arc_easy" / "test.jsonl")
    spec = DownstreamSpec(tasks=["arc_easy", "piqa"], local_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="piqa.*arc_easy"):
        spec.check()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"tasks": []}, "empty"),
        ({"num_fewshot": -1}, "num_fewshot"),
        ({"limit": 0}, "limit"),
        ({"bootstrap_iters": -1}, "bootstrap_iters"),
        ({"tasks": ["piqa", "mmlu"], "limit": {"piqa": 5}}, "name every task"),
        ({"tasks": ["piqa"], "limit": {"piqa": 5, "arc_easy": 5}}, "name every task"),
        ({"tasks": ["piqa"], "limit": {"piqa": 0}}, "positive ints"),
        ({"tasks": ["piqa"], "limit": {"piqa": 0.5}}, "positive ints"),
    ],
)
def test_spec_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        DownstreamSpec(**bad).check()


def test_per_task_limit_is_each_tasks_own():
    spec = DownstreamSpec(tasks=["piqa", "mmlu"], limit={"piqa": 50, "mmlu": 2})
    spec.check()
    assert (spec.limit_of("piqa"), spec.limit_of("mmlu")) == (50, 2)
    assert spec.stderr_iters == DEFAULT_BOOTSTRAP_ITERS  # subsampled: stderr on
    assert DownstreamSpec(limit=7).limit_of("piqa") == 7


def test_spec_from_dict_names_unknown_setting():
    assert spec_from_dict(None) is None
    assert spec_from_dict({"limit": 3}).tasks == list(PAPER_TASKS)
    with pytest.raises(ValueError, match="limt"):
        spec_from_dict({"limt": 3})


def test_stderr_is_computed_whenever_limit_subsamples():
    assert DownstreamSpec().stderr_iters == 0  # full evaluation: as configured (off)
    assert DownstreamSpec(limit=10).stderr_iters == DEFAULT_BOOTSTRAP_ITERS
    assert DownstreamSpec(limit=10, bootstrap_iters=50).stderr_iters == 50
    assert DownstreamSpec(bootstrap_iters=50).stderr_iters == 50


def test_local_task_config_changes_only_the_data_source():
    stock = {
        "tag": ["ai2_arc"],
        "task": "arc_easy",
        "dataset_path": "allenai/ai2_arc",
        "dataset_name": "ARC-Easy",
        "dataset_kwargs": {"revision": "abc"},
        "training_split": "train",
        "validation_split": "validation",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "metadata": {"version": 1.0},
    }
    cfg = local_task_config("arc_easy", stock, {"test": "/x/test.jsonl"}, "/lm_eval/arc.yaml")
    assert cfg["include"] == "/lm_eval/arc.yaml" and cfg["task"] == "arc_easy"
    merged = {**stock, **cfg}  # what lm-eval's include: resolves to (local keys win)
    assert merged["dataset_path"] == "json" and merged["dataset_name"] is None
    assert merged["dataset_kwargs"] == {"revision": "abc", "data_files": {"test": "/x/test.jsonl"}}
    assert merged["training_split"] is None and merged["validation_split"] is None  # not local
    assert merged["test_split"] == "test"
    assert merged["tag"] == []  # lm-eval's own tag lists stay whole
    assert merged["doc_to_text"] == stock["doc_to_text"]
    assert merged["metadata"] == stock["metadata"]


def test_check_local_rejects_a_leaf_that_does_not_read_the_generated_yaml(tmp_path):
    from types import SimpleNamespace

    from twossp.evaluation.local_tasks import _check_local

    files = {"arc_easy": {"test": "/x/test.jsonl"}}

    def config(path="json", data=None, source=tmp_path / "arc_easy.yaml"):
        kwargs = {"data_files": data or files["arc_easy"]}
        return SimpleNamespace(
            dataset_path=path, dataset_kwargs=kwargs, metadata={"config_source": str(source)}
        )

    _check_local("arc_easy", config(), files, tmp_path)  # fine
    bad = [
        ("arc_easy", config(path="allenai/ai2_arc")),  # reads the hub
        ("arc_easy", config(data={"test": "/y/test.jsonl"})),  # other files
        ("arc_easy", config(source="/lm_eval/tasks/arc/arc_easy.yaml")),  # stock YAML
        ("mmlu_anatomy", config()),  # no local folder for it
    ]
    for leaf, cfg in bad:
        with pytest.raises(RuntimeError, match=leaf):
            _check_local(leaf, cfg, files, tmp_path)


def test_to_metrics_reads_group_acc_versions_and_samples():
    out = {
        "results": {
            "arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.25, "acc_stderr,none": "N/A"},
            "winogrande": {"acc,none": 0.75, "acc_stderr,none": float("nan")},
            "mmlu": {"acc,none": 0.3, "acc_stderr,none": 0.05},
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
    assert mmlu["stderr"] == 0.05
    assert rows[("acc", "arc_easy")].variant["stderr"] is None  # "N/A": not computed
    assert rows[("acc", "winogrande")].variant["stderr"] is None  # not finite


def test_accuracy_rows_carry_the_95_normal_interval_of_their_stderr():
    out = {
        "results": {
            "piqa": {
                "acc,none": 0.6,
                "acc_stderr,none": 0.05,
                "acc_norm,none": 0.98,
                "acc_norm_stderr,none": 0.02,
            },
            "arc_easy": {"acc,none": 0.01, "acc_stderr,none": 0.01},
            "winogrande": {"acc,none": 0.5, "acc_stderr,none": "N/A"},
        },
    }
    spec = DownstreamSpec(tasks=["piqa", "arc_easy", "winogrande"], limit=4)
    rows = {(m.metric, m.dataset): m for m in to_metrics(out, spec)}
    assert Z95 == pytest.approx(1.96, abs=5e-5)
    acc = rows[("acc", "piqa")]
    assert (acc.ci_low, acc.ci_high) == pytest.approx((0.6 - 0.05 * Z95, 0.6 + 0.05 * Z95))
    assert acc.variant["stderr"] == 0.05
    norm = rows[("acc_norm", "piqa")]  # acc_norm has its own stderr, clipped at 1
    assert norm.variant["stderr"] == 0.02
    assert (norm.ci_low, norm.ci_high) == pytest.approx((0.98 - 0.02 * Z95, 1.0))
    low = rows[("acc", "arc_easy")]  # clipped at 0
    assert (low.ci_low, low.ci_high) == pytest.approx((0.0, 0.01 + 0.01 * Z95))
    none = rows[("acc", "winogrande")]  # no stderr, no interval
    assert (none.ci_low, none.ci_high) == (None, None)
    assert accuracy_interval(0.5, None) is None


def test_lm_eval_json_keeps_results_and_drops_objects(tmp_path):
    out = {
        "results": {"arc_easy": {"acc,none": np.float64(0.5), "acc_stderr,none": 0.1}},
        "groups": {},
        "configs": {"arc_easy": {"metadata": {"version": 1.0}, "process_docs": print}},
        "versions": {"arc_easy": 1.0},
        "n-shot": {"arc_easy": 0},
        "n-samples": {"arc_easy": {"original": 10, "effective": np.int64(4)}},
        "higher_is_better": {"arc_easy": {"acc": True}},
        "config": {"model": object(), "limit": 4, "bootstrap_iters": 1000, "nan": float("nan")},
        "samples": {"arc_easy": [object()]},
        "tags": {"b", "a"},
    }
    record = lm_eval_record(out)
    assert record["results"]["arc_easy"] == {"acc,none": 0.5, "acc_stderr,none": 0.1}
    assert record["n-samples"]["arc_easy"]["effective"] == 4
    assert "process_docs" not in record["configs"]["arc_easy"]
    assert record["config"] == {"limit": 4, "bootstrap_iters": 1000, "nan": None}
    assert "samples" not in record and record["tags"] == ["a", "b"]
    path = save_lm_eval_json(out, tmp_path / "plans" / "abc.lm_eval.json")
    assert json.loads(path.read_text()) == record
    assert [p.name for p in path.parent.iterdir()] == ["abc.lm_eval.json"]  # no temp left


@pytest.fixture
def stories(stories_path, monkeypatch):
    """stories260K and its tokenizer, with every hub access switched off."""
    import datasets.config
    import huggingface_hub.constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = AutoModelForCausalLM.from_pretrained(stories_path)
    return model, AutoTokenizer.from_pretrained(stories_path)


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_stories260k_on_local_stock_tasks_offline(stories):
    from twossp.evaluation.downstream import evaluate_tasks

    model, tokenizer = stories
    spec = DownstreamSpec(
        tasks=["arc_easy", "winogrande", "mmlu"], limit=2, batch_size=64, local_dir=str(TASKS)
    )
    rows = {(m.metric, m.dataset): m for m in evaluate_tasks(model, tokenizer, spec).metrics}

    assert set(rows) == {
        ("acc", "arc_easy"),
        ("acc_norm", "arc_easy"),
        ("acc", "winogrande"),
        ("acc", "mmlu"),
    }
    for m in rows.values():
        assert 0.0 <= m.value <= 1.0
        assert m.variant["source"] == f"local:{TASKS.name}"  # no path of this machine
        assert m.variant["num_fewshot"] == 0 and m.variant["limit"] == 2
        assert 0.0 <= m.variant["stderr"] <= 1.0  # computed because limit subsamples
    assert rows[("acc", "arc_easy")].variant["task_version"] == "1.0"
    assert rows[("acc", "mmlu")].variant["task_version"] == "2"  # the group's version
    assert rows[("acc", "mmlu")].variant["subtasks"] == 57
    assert rows[("acc", "mmlu")].variant["samples"] == 2 * 57  # two documents per subject
    assert not model.training


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_per_task_limit_takes_the_same_seeded_documents_as_an_int_limit(stories):
    from twossp.evaluation.downstream import run_tasks

    model, tokenizer = stories
    common = {"batch_size": 64, "local_dir": str(TASKS)}
    limits = {"arc_easy": 6, "mmlu_anatomy": 3}
    result = run_tasks(model, tokenizer, DownstreamSpec(tasks=list(limits), limit=limits, **common))
    rows = {(m.metric, m.dataset): m for m in result.metrics}
    for (_, task), m in rows.items():
        assert m.variant["samples"] == limits[task] and m.variant["limit"] == limits[task]
        assert m.ci_low is not None  # subsampled: stderr and interval computed
    # the same documents as an int limit takes: the same accuracy and stderr
    same = run_tasks(model, tokenizer, DownstreamSpec(tasks=["mmlu_anatomy"], limit=3, **common))
    ref = same.metrics[0]
    assert (ref.value, ref.variant["stderr"]) == (
        rows[("acc", "mmlu_anatomy")].value,
        rows[("acc", "mmlu_anatomy")].variant["stderr"],
    )
    # every scored document is kept, with its outcome, choices and cluster
    docs = [d for d in result.documents if d["subtask"] == "mmlu_anatomy"]
    assert [d["unit"] for d in docs] == document_ids(
        DownstreamSpec(**common), "mmlu_anatomy", 3, 135
    )
    assert [d["unit"] for d in same.documents] == [d["unit"] for d in docs]
    for d in result.documents:
        assert d["acc"] in (0.0, 1.0) and len(d["loglik"]) >= 2
        assert d["acc"] == float(int(np.argmax(d["loglik"])) == d["target"])
    assert {d["cluster"] for d in docs} == {"mmlu_anatomy"}
    assert {d["cluster"] for d in result.documents if d["dataset"] == "arc_easy"} == {None}
    assert sum(d["dataset"] == "arc_easy" for d in result.documents) == 6


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_local_tasks_through_include_path_with_stderr_and_json(stories, tmp_path):
    import lm_eval
    import yaml
    from lm_eval.tasks._factory import TaskFactory

    from twossp.evaluation.downstream import run_tasks
    from twossp.evaluation.local_tasks import task_manager

    model, tokenizer = stories
    tasks = ["arc_easy", "mmlu_anatomy"]
    spec = DownstreamSpec(tasks=tasks, limit=4, batch_size=64, local_dir=str(TASKS))
    result = run_tasks(model, tokenizer, spec)

    # the data came in through the public include_path, with lm-eval's own factory
    files = local_data_files(TASKS, tasks)
    manager = task_manager(files)
    assert type(manager._factory) is TaskFactory  # no private-factory subclass
    folder = Path(manager.include_path)
    stock = Path(lm_eval.__file__).parent / "tasks"
    for name in tasks:
        generated = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert Path(generated["include"]).is_relative_to(stock)  # the stock task YAML
        config = result.lm_eval["configs"][name]
        assert config["dataset_path"] == "json"
        assert config["dataset_kwargs"]["data_files"] == files[name]
        assert Path(config["metadata"]["config_source"]).parent == folder
        assert config["task"] == name and config["metadata"]["version"] == 1.0

    rows = {(m.metric, m.dataset): m for m in result.metrics}
    assert set(rows) == {("acc", "arc_easy"), ("acc_norm", "arc_easy"), ("acc", "mmlu_anatomy")}
    for (metric, task), m in rows.items():
        assert m.variant["samples"] == 4
        assert math.isfinite(m.variant["stderr"])
        assert m.variant["stderr"] == result.lm_eval["results"][task][f"{metric}_stderr,none"]
        assert (m.ci_low, m.ci_high) == accuracy_interval(m.value, m.variant["stderr"])
        assert m.ci_low <= m.value <= m.ci_high

    path = save_lm_eval_json(result.lm_eval, tmp_path / "plans" / "abc.lm_eval.json")
    saved = json.loads(path.read_text())
    for key in ("results", "configs", "versions", "n-shot", "n-samples", "higher_is_better"):
        assert set(tasks) <= set(saved[key]), key
    assert saved["config"]["bootstrap_iters"] == DEFAULT_BOOTSTRAP_ITERS
    assert saved["config"]["limit"] is None  # documents handed over by id (samples)
    ids = sorted(d["unit"] for d in result.documents if d["dataset"] == "arc_easy")
    assert ids == document_ids(spec, "arc_easy", 4, 2376)
    for task in tasks:
        assert isinstance(saved["results"][task]["acc_stderr,none"], float)
    assert saved["n-samples"]["mmlu_anatomy"]["effective"] == 4


def test_a_limit_keeps_a_seeded_random_sample_of_the_whole_split():
    spec = DownstreamSpec(seed=7)
    ids = document_ids(spec, "piqa", 100, 1838)
    assert len(set(ids)) == 100 and ids == sorted(ids)
    assert ids == document_ids(DownstreamSpec(seed=7), "piqa", 100, 1838)  # every method alike
    assert ids != document_ids(DownstreamSpec(seed=8), "piqa", 100, 1838)
    assert ids != document_ids(spec, "arc_easy", 100, 1838)  # each task its own draw
    assert max(ids) > 1838 // 2  # spread over the split, not its first documents
    assert document_ids(spec, "piqa", 0.01, 1838) == document_ids(spec, "piqa", 19, 1838)
    assert document_ids(spec, "piqa", 5000, 1838) == list(range(1838))
    first = DownstreamSpec(sample="first")
    assert document_ids(first, "piqa", 5, 1838) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="downstream.sample"):
        DownstreamSpec(sample="head").check()


def test_winogrande_twins_hellaswag_activities_and_mmlu_subjects_are_clusters():
    from twossp.evaluation.clusters import clusters

    wino = [
        {"option1": "Sarah", "option2": "Maria"},
        {"option1": "Sarah", "option2": "Maria"},
        {"option1": "bed", "option2": "blanket"},
        {"option1": "Sarah", "option2": "Maria"},
    ]
    assert clusters("winogrande", wino) == [
        "winogrande:twins@0",
        "winogrande:twins@0",
        "winogrande:twins@2",
        "winogrande:twins@3",  # the same names later: another pair
    ]
    swag = [{"activity_label": "Clean and jerk"}, {"activity_label": "Clean and jerk"}]
    assert clusters("hellaswag", swag) == ["hellaswag:Clean and jerk"] * 2
    assert clusters("mmlu_anatomy", [{}, {}]) == ["mmlu_anatomy"] * 2
    assert clusters("arc_easy", [{}, {}]) == [None, None]
