"""Every experiment overlay composes (with each point of its sweep grid); cpu_demo runs."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import compose_config, needs_shared
from twossp.config import to_run_spec
from twossp.methods import METHODS
from twossp.methods.registry import method_names
from twossp.results import lm_eval_path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


_compose = compose_config


def _axes(name: str) -> list[list[str]]:
    params = _compose(f"experiment={name}", hydra_cfg=True).hydra.sweeper.params or {}
    return [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]


def _grid(name: str) -> list[list[str]]:
    return [list(point) for point in itertools.product(*_axes(name))]


def _one_at_a_time(axes: list[list[str]]) -> list[list[str]]:
    """Every value of every axis, the other axes at their first value (not the full product)."""
    points = []
    for i, axis in enumerate(axes):
        for value in axis:
            point = [a[0] for a in axes]
            point[i] = value
            if point not in points:
                points.append(point)
    return points


def test_the_expected_experiments_exist():
    assert set(EXPERIMENTS) >= {
        "table1",
        "table2_downstream",
        "pruning_time",
        "ablation_alpha",
        "ablation_calib",
        "cpu_demo",
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_along_every_sweep_axis(name):
    cfg = _compose(f"experiment={name}")
    assert cfg.experiment_name == name  # the overlay wins over config.yaml's defaults
    axes = _axes(name)
    assert axes, f"{name} pins no hydra.sweeper.params grid"
    points = _one_at_a_time(axes)
    hashes = set()
    for point in points:
        spec = to_run_spec(_compose(f"experiment={name}", *point))
        assert spec.method in METHODS and spec.experiment == name
        if spec.method != "dense":  # dense has one run per model whatever the sparsity
            hashes.add(spec.config_hash)
    pruning = [p for p in points if "method=dense" not in p]
    assert len(hashes) == len(pruning)  # every value of every axis changes the run


def test_paper_grids_have_the_papers_shape():
    table1 = _grid("table1")
    assert len(table1) == 4 * 7 * 3
    assert {p[1] for p in table1} == {
        f"method={m}"
        for m in ("dense", "twossp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt")
    }
    t2 = to_run_spec(_compose("experiment=table2_downstream"))
    assert t2.sparsity == 0.375 and t2.eval.downstream.num_fewshot == 0
    assert t2.eval.downstream.tasks == [
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "winogrande",
        "mmlu",
    ]
    assert t2.eval.downstream.limit is None
    assert len(_grid("cpu_demo")) == 7 * 3


def test_downstream_local_dir_does_not_enter_the_hash(tmp_path):
    a = to_run_spec(_compose("eval=downstream", f"eval.downstream.local_dir={tmp_path}/tasks"))
    b = to_run_spec(_compose("eval=downstream", "eval.downstream.local_dir=/elsewhere/tasks"))
    c = to_run_spec(_compose("eval=downstream", "eval.downstream.limit=5"))
    assert a.config_hash == b.config_hash != c.config_hash
    assert a.eval.downstream.local_dir == f"{tmp_path}/tasks"
    assert to_run_spec(_compose()).eval.downstream is None


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_reproduce_table_runs_the_sweep_then_the_analysis():
    out = subprocess.run(
        ["make", "-n", "reproduce-table", "EXPERIMENT=table1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    steps = [
        "experiments/run.py -m experiment=table1",
        "-m analysis.collect",
        "-m analysis.tables --experiment table1",
        "-m analysis.plots --experiment table1",
    ]
    positions = [out.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), out


@needs_shared()
@pytest.mark.slow
def test_cpu_demo_runs_offline_end_to_end(tmp_path, monkeypatch):
    """One cpu_demo job (dense, two tasks) through the pipeline, then collect + tables."""
    import datasets.config
    import huggingface_hub.constants

    from analysis import builders, collect
    from twossp.pipeline import run

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = to_run_spec(
        _compose(
            "experiment=cpu_demo",
            "method=dense",
            f"paths.results_dir={tmp_path}",
            "eval.max_windows=2",
            "eval.downstream.limit=2",
            "eval.downstream.tasks=[arc_challenge,piqa]",
        )
    )
    assert spec.eval.downstream.local_dir is not None  # the offline copies are used
    out = run(spec)
    frame = out.frame[out.frame["metric"].isin(["ppl", "acc", "acc_norm"])]  # not CUDA memory
    rows = frame.set_index(["metric", "dataset"])
    assert set(rows.index) == {
        ("ppl", "wikitext2"),
        ("ppl", "c4"),
        ("ppl", "ptb"),
        ("acc", "arc_challenge"),
        ("acc_norm", "arc_challenge"),
        ("acc", "piqa"),
        ("acc_norm", "piqa"),
    }
    assert '"task_version": "1.0"' in rows.loc[("acc", "piqa"), "variant"]
    assert (rows["experiment"] == "cpu_demo").all()
    # lm-eval's full output is kept beside the plan, standard errors included (limit set)
    record = json.loads(lm_eval_path(tmp_path, spec.config_hash).read_text())
    stderr = record["results"]["piqa"]["acc_stderr,none"]
    assert isinstance(stderr, float) and 0 < stderr < 1
    assert json.loads(rows.loc[("acc", "piqa"), "variant"])["stderr"] == pytest.approx(stderr)

    merged = collect.collect([tmp_path], tmp_path / "results.parquet")
    t2 = builders.downstream_table(merged, experiment="cpu_demo")
    assert t2.values.loc[("stories260k", "paper", "dense"), ("piqa", "ours")] == pytest.approx(
        100 * rows.loc[("acc", "piqa"), "value"]
    )


def _sweep_points(name: str) -> list[list[str]]:
    """The sweep's points as Hydra's own parser expands them (escaped ``${...}`` included)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _compose(f"experiment={name}", hydra_cfg=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [
        [f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [list(point) for point in itertools.product(*axes)]


def _without_eval(spec) -> dict:
    return {k: v for k, v in spec.identity().items() if k != "eval"}


def test_cpu_smollm2_downstream_prunes_as_cpu_smollm2_on_the_same_documents():
    points = _sweep_points("cpu_smollm2_downstream")
    assert len(points) == 7  # dense and six methods at 37.5%, protocol=paper
    for point in points:
        spec = to_run_spec(_compose("experiment=cpu_smollm2_downstream", *point))
        assert spec.protocol == "paper" and spec.sparsity == 0.375
        # pruning and calibration exactly as cpu_smollm2 (its per-method reductions included)
        assert _without_eval(spec) == _without_eval(
            to_run_spec(_compose("experiment=cpu_smollm2", *point))
        )
        downstream = spec.eval.downstream
        assert downstream.tasks == list(downstream.limit) and downstream.num_fewshot == 0
        assert downstream.limit["mmlu"] == 2 and downstream.limit["piqa"] == 100
        downstream.check()
    twossp = to_run_spec(_compose("experiment=cpu_smollm2_downstream", "method=twossp"))
    assert twossp.method_params["score_seqlen"] == 64  # a cpu_smollm2 reduction, also unswept


def test_cpu_smollm2_seeds_spans_five_draws():
    cpu = {
        m: to_run_spec(_compose("experiment=cpu_smollm2", f"method={m}", "protocol=paper"))
        for m in ("twossp", "blockpruner", "slicegpt")
    }
    specs = [
        to_run_spec(_compose("experiment=cpu_smollm2_seeds", *p))
        for p in _sweep_points("cpu_smollm2_seeds")
    ]
    unique = {s.config_hash: s for s in specs}
    assert len(specs) == len(unique) == 3 * 5
    assert {(s.method, s.calib.seed) for s in unique.values()} == {
        (m, seed) for m in cpu for seed in range(5)
    }
    seed0 = {s.method: s for s in unique.values() if s.calib.seed == 0}
    for m, base in cpu.items():  # seed 0 prunes and scores as cpu_smollm2, without timing rows
        assert base.calib.seed == 0 and _without_eval(seed0[m]) == _without_eval(base)
        assert seed0[m].eval.inference is None and base.eval.inference is not None


def test_the_authors_budget_experiments_share_their_draw_0_runs():
    authors = {
        s.method: s
        for s in (
            to_run_spec(_compose("experiment=cpu_smollm2_authors", *p))
            for p in _sweep_points("cpu_smollm2_authors")
        )
    }
    assert set(authors) == set(method_names())
    # every method reads a quarter of the paper's calibration tokens: 512-token windows
    assert {s.calib.seqlen for s in authors.values()} == {512}
    assert authors["shortgpt"].calib.n_samples == 256
    assert authors["twossp"].method_params["score_seqlen"] is None
    evopress = authors["evopress"].method_params
    assert (evopress["pool_tokens"], evopress["tokens"], evopress["initial_tokens"]) == (
        131072 // 4,
        [2048 // 4, 32768 // 4],
        2048 // 4,
    )
    assert (evopress["offspring"], evopress["initially_generated"]) == (32, 64)
    assert authors["dense"].eval.max_windows == 48
    draws = [
        to_run_spec(_compose("experiment=cpu_smollm2_authors_draws", *p))
        for p in _sweep_points("cpu_smollm2_authors_draws")
    ]
    assert len({s.config_hash for s in draws}) == 3 * 5  # three methods x five draws
    for s in draws:
        if s.calib.seed == 0:  # the same runs as cpu_smollm2_authors
            assert s.config_hash == authors[s.method].config_hash
    downstream = [
        to_run_spec(_compose("experiment=cpu_smollm2_authors_downstream", *p))
        for p in _sweep_points("cpu_smollm2_authors_downstream")
    ]
    for s in downstream:  # pruned exactly as in cpu_smollm2_authors, scored on documents
        base = authors[s.method]
        assert s.built_method == base.built_method and s.calib == base.calib
        assert s.eval.datasets == [] and s.eval.downstream.limit == 1000
    chance = [
        to_run_spec(_compose("experiment=cpu_smollm2_authors_chance", *p))
        for p in _sweep_points("cpu_smollm2_authors_chance")
    ]
    assert {s.method for s in chance} == {s.method for s in downstream}  # the same four models
    for s in chance:  # the tasks at chance, apart: same pruning, about 1,000 documents each
        base = authors[s.method]
        assert s.built_method == base.built_method and s.calib == base.calib
        limit = dict(s.eval.downstream.limit)
        assert limit["arc_challenge"] == limit["winogrande"] == 1000 and 57 * limit["mmlu"] >= 1000


def test_the_papers_facts_are_defined_once_and_read_by_configs_and_analysis():
    from analysis import order
    from twossp import paper
    from twossp.evaluation.downstream import PAPER_TASKS

    assert _compose("eval=downstream").eval.downstream.tasks == list(paper.TASKS)
    assert PAPER_TASKS == order.TASKS == paper.TASKS
    assert order.MODEL_ORDER == paper.MODELS
    assert order.PPL_DATASETS[: len(paper.PPL_DATASETS)] == paper.PPL_DATASETS
    grid = _sweep_points("table1")
    assert {dict(p)["model"] for p in map(_as_pairs, grid)} == set(paper.MODELS)
    assert {float(dict(p)["sparsity"]) for p in map(_as_pairs, grid)} == set(paper.SPARSITIES)
    assert list(_compose("experiment=table1").eval.use) == [*paper.PPL_DATASETS, "ptb"]


def _as_pairs(point):
    return [tuple(arg.split("=", 1)) for arg in point]
