"""analysis/: merge run files (membership, corrupt files), tables that refuse to guess (both
protocols, achieved sparsity, bold, LaTeX, captions from the rows), ablation views, plots,
the notebook, and a real ablation sweep on stories260K.

One file over the usual size on purpose: the tests share one synthetic results folder
(:func:`_write_run` and the fixtures), and each table, view and plot is checked on it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import (
    ablations,
    builders,
    captions,
    cells,
    collect,
    comparison,
    draws,
    intervals,
    notebook,
    order,
    paired,
    plots,
    published,
    render,
    tables,
)
from tests.conftest import needs_shared
from twossp.items import ITEM_COLUMNS, items_path, write_items
from twossp.results import Metric, RunRecord, add_members, plan_path, run_path, to_frame, write_run

ROOT = Path(__file__).resolve().parents[1]
CALIB = {
    "dataset": "c4_train",
    "source": "local:c4.jsonl",
    "n_samples": 16,
    "seqlen": 64,
    "seed": 0,
    "packing": "stream",
    "windows": 16,
}

# (model, method, sparsity) -> {dataset: ppl}; accuracies below. Dense is the best everywhere
# but never bold; twossp wins wikitext2, shortgpt wins c4 (protocol paper).
PPL = {
    ("m_a", "dense", 0.0): {"wikitext2": 5.0, "c4": 7.0},
    ("m_a", "twossp", 0.25): {"wikitext2": 8.0, "c4": 11.0},
    ("m_a", "shortgpt", 0.25): {"wikitext2": 9.0, "c4": 10.5},
    ("m_a", "twossp", 0.375): {"wikitext2": 10.0, "c4": 14.0},
    ("m_a", "shortgpt", 0.375): {"wikitext2": 12.0, "c4": 13.0},
}
ACC = {  # at 37.5%
    ("m_a", "dense", 0.0): {"arc_easy": 0.70, "piqa": 0.78},
    ("m_a", "twossp", 0.375): {"arc_easy": 0.61, "piqa": 0.70},
    ("m_a", "shortgpt", 0.375): {"arc_easy": 0.55, "piqa": 0.72},
}
SECONDS = {"twossp": 3.0, "shortgpt": 7.0, "dense": 0.0}
# Per-unit outcomes behind the values, so that the paired verdicts have units to pair: each
# window's NLL is log(ppl) plus a difficulty every run shares (mean 0) and a small jitter of
# its own, so a gap in perplexity shows in every window alike; a task's documents are nested
# (document i right when i < accuracy x DOCS), so the better run is right wherever the worse
# one is.
DIFFICULTY = [0.3, -0.2, 0.5, -0.4, 0.1, 0.0, -0.3, 0.0]
JITTER = {"dense": 0, "twossp": 1, "shortgpt": 2}
DOCS = 100


def _window_nll(method, ppl, windows):
    shape = (DIFFICULTY * windows)[:windows]
    shape = np.array(shape) - np.mean(shape)
    jitter = 0.01 * np.roll(np.resize([1.0, -1.0], windows), JITTER.get(method, 3))
    return (np.log(ppl) + shape + jitter - jitter.mean()).tolist()


def _documents(task, accuracy, n=DOCS):
    right = round(accuracy * n)
    return [
        {"kind": "document", "dataset": task, "subtask": task, "unit": i, "acc": float(i < right),
         "target": 0, "loglik": [0.0, -1.0]}
        for i in range(n)
    ]  # fmt: skip


OVERSHOOT = {"shortgpt": 0.4, "twossp": None}  # achieved sparsity (None: the target)


def _write_run(
    results_dir,
    model,
    method,
    sparsity,
    created,
    values,
    run_id=None,
    chash=None,
    *,
    protocol="paper",
    params=None,
    calib=None,
    experiment="synthetic",
    windows=8,
    max_windows=None,
    n_attn=None,
    ci=None,
    stderr=None,
    window_nll=None,
    documents=None,
):
    """One run's file, membership (and plan); its per-unit outcomes as well: ``window_nll``
    ({dataset: NLLs}, default :func:`_window_nll`) in each perplexity row, and an items file
    of its documents (``documents``: item rows, default :func:`_documents` per task).
    ``max_windows``: recorded as ``eval.max_windows`` in the perplexity rows when given."""
    chash = chash or f"{model}-{protocol}-{method}-{sparsity}"
    achieved = OVERSHOOT.get(method) or sparsity
    record = RunRecord(
        run_id=run_id or f"run-{chash}",
        config_hash=chash,
        experiment=experiment,
        protocol=protocol,
        model=model,
        model_path="/m",
        method=method,
        method_params=params if params is not None else {},
        target_sparsity=sparsity,
        achieved_sparsity=achieved,
        params_before=100,
        params_after=int(100 * (1 - achieved)),
        block_params_before=80,
        block_params_after=60,
        prune_seconds=SECONDS.get(method, 1.0),
        seed=0,
        dtype="float32",
        device="cpu",
        calib=None if method == "dense" else (calib or CALIB),
        git_sha="x",
        versions={},
    )
    ci, stderr, window_nll = ci or {}, stderr or {}, window_nll or {}
    metrics = [
        Metric(
            "ppl",
            d,
            v,
            {
                "seqlen": 8,
                "windows": windows,
                "tokens": 8 * windows,
                "window_nll": window_nll.get(d) or _window_nll(method, v, windows),
                **({} if max_windows is None else {"max_windows": max_windows}),
            },
            ci_low=ci.get(d, (None, None))[0],
            ci_high=ci.get(d, (None, None))[1],
        )
        for d, v in values.get("ppl", {}).items()
    ]
    metrics += [
        Metric("acc", t, v, {"task_version": "1.0", "limit": None, "stderr": stderr.get(t)})
        for t, v in values.get("acc", {}).items()
    ]
    frame = to_frame(record, metrics).assign(created_at=pd.Timestamp(created))
    if documents is None:
        documents = [d for t, v in values.get("acc", {}).items() for d in _documents(t, v)]
    if documents:
        write_items(documents, items_path(results_dir, chash), chash)
    write_run(frame, run_path(results_dir, chash))
    add_members(results_dir, experiment, [chash])
    if n_attn is not None:
        path = plan_path(results_dir, chash)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"attention": [], "info": {"n_attn": n_attn}}))
    return frame


DAY1, DAY2, DAY3 = (f"2026-01-0{d}T00:00:00+00:00" for d in (1, 2, 3))


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    for key, ppl in PPL.items():
        _write_run(root, *key, DAY2, {"ppl": ppl, "acc": ACC.get(key, {})})
    return root


def _merged(*dirs):
    return collect.collect(list(dirs))


def _items(*dirs):
    return collect.merge(list(dirs)).items.to_pandas()


# --- collect --------------------------------------------------------------------------------


def test_collect_merges_and_keeps_the_newest_run_per_config(results_dir, tmp_path):
    old, new = {"wikitext2": 99.0, "c4": 99.0}, {"wikitext2": 7.5, "c4": 10.0}
    _write_run(tmp_path / "other", "m_a", "twossp", 0.25, DAY1, {"ppl": old}, "old")
    _write_run(tmp_path / "third", "m_a", "twossp", 0.25, DAY3, {"ppl": new}, "new")
    out = tmp_path / "merged" / "results.parquet"
    merged = collect.collect([results_dir, tmp_path / "other", tmp_path / "third"], out)

    assert out.exists() and len(collect.load(out)) == len(merged)
    assert merged["config_hash"].nunique() == len(PPL)
    twossp = merged[(merged["method"] == "twossp") & (merged["target_sparsity"] == 0.25)]
    assert set(twossp["run_id"]) == {"new"}
    assert twossp.set_index("dataset").loc["wikitext2", "value"] == 7.5


def test_collect_keeps_a_reused_run_under_each_of_its_configs(tmp_path):
    # dense computed once ("d1") and copied under a second hash (older code); later the first
    # config is recomputed ("d2"): each hash keeps exactly its newest run.
    ppl = {"ppl": {"wikitext2": 5.0}}
    for chash in ("dense-a", "dense-b"):
        _write_run(tmp_path / "r1", "m", "dense", 0.0, DAY1, ppl, "d1", chash)
    _write_run(tmp_path / "r2", "m", "dense", 0.0, DAY2, ppl, "d2", "dense-a")
    merged = collect.collect([tmp_path / "r1", tmp_path / "r2"])
    pairs = set(zip(merged["config_hash"], merged["run_id"], strict=True))
    assert pairs == {("dense-a", "d2"), ("dense-b", "d1")} and len(merged) == 2


def test_collect_skips_and_names_a_corrupt_file(results_dir, caplog, capsys):
    bad = results_dir / "runs" / "broken.parquet"
    bad.write_bytes(b"PAR1 truncated")
    (results_dir / "runs" / "empty.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        out = collect.main(["--results-dir", str(results_dir)])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("broken.parquet" in w for w in warned) and any("empty.parquet" in w for w in warned)
    assert all("\n" not in w for w in warned)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[collect] 5 runs") and "2 unreadable file(s) skipped" in line
    assert out == results_dir / "results.parquet" and out.exists()


def test_collect_keeps_list_columns_membership_and_plan_facts(tmp_path):
    root = tmp_path / "r"
    evo = {"survivors": [2, 1], "tokens": [2048, 32768], "offspring": 32}
    _write_run(root, "m", "evopress", 0.25, DAY2, {"ppl": {"wikitext2": 9.0}}, params=evo)
    twossp = {"alpha": 1.5, "n_calib_stage1": 32}
    _write_run(
        root, "m", "twossp", 0.25, DAY2, {"ppl": {"wikitext2": 8.0}}, params=twossp, n_attn=3
    )
    add_members(root, "other_exp", ["m-paper-twossp-0.25"])
    collect.main(["--results-dir", str(root)])
    frame = collect.load(root / "results.parquet").set_index("method")
    assert frame.loc["evopress", "method.survivors"] == [2, 1]
    assert frame.loc["evopress", "method.tokens"] == [2048, 32768]
    assert frame.loc["twossp", "method.survivors"] is None
    offspring = frame.loc["evopress", "method.offspring"]  # an int beside nulls stays an int
    assert offspring == 32 and isinstance(offspring, int)
    assert frame.loc["twossp", "experiments"] == ["other_exp", "synthetic"]
    assert frame.loc["evopress", "experiments"] == ["synthetic"]
    assert frame.loc["twossp", "plan_n_attn"] == 3
    assert pd.isna(frame.loc["evopress", "plan_n_attn"])


def test_collect_merges_the_kept_runs_items_beside_the_merged_file(results_dir, tmp_path):
    out = tmp_path / "merged" / "results.parquet"
    collect.collect([results_dir], out)
    assert collect.items_file(out) == out.with_name("results_items.parquet")
    items = collect.load_items(out)
    assert list(items.columns) == ITEM_COLUMNS
    assert sorted(items["config_hash"].unique()) == [
        "m_a-paper-dense-0.0",
        "m_a-paper-shortgpt-0.375",
        "m_a-paper-twossp-0.375",
    ]
    assert len(items) == 3 * 2 * DOCS  # three runs with documents, two tasks each
    # a newer run of one configuration in another folder: its items replace the old ones
    extra = tmp_path / "extra"
    _write_run(extra, "m_a", "twossp", 0.375, DAY3, {"acc": {"arc_easy": 0.5}}, "run-newer")
    merged = collect.merge([results_dir, extra]).items.to_pandas()
    newer = merged[merged["config_hash"] == "m_a-paper-twossp-0.375"]
    assert set(newer["dataset"]) == {"arc_easy"} and newer["acc"].sum() == 50
    assert collect.load_items(tmp_path / "absent.parquet").empty


# --- generic tables -------------------------------------------------------------------------


def test_perplexity_table_bolds_the_best_pruned_value_per_column(results_dir):
    md = builders.perplexity_table(_merged(results_dir)).to_markdown()
    assert "| model | protocol | method | 25% wikitext2 | 25% c4 | 37.5% wikitext2 |" in md
    assert "| m_a | paper | twossp | **8.00** | 11.00 | **10.00** | 14.00 |" in md
    assert "| m_a | paper | shortgpt | 9.00 | **10.50** | 12.00 | **13.00** |" in md
    # dense: one row, repeated under each sparsity, never bold although it is the lowest
    assert md.count("| m_a | paper | dense |") == 1
    assert "| m_a | paper | dense | 5.00 | 7.00 | 5.00 | 7.00 |" in md
    assert "(paper)" not in md  # the shipped published.csv has no matching row


def test_table1_renders_both_protocols_as_row_groups(results_dir):
    for key, ppl in PPL.items():  # matched: shortgpt wins wikitext2 at 25%
        shifted = {d: v + (3.0 if key[1] == "twossp" else 0.0) for d, v in ppl.items()}
        _write_run(results_dir, *key, DAY2, {"ppl": shifted}, protocol="matched")
    t = builders.perplexity_table(_merged(results_dir))
    md = t.to_markdown()
    rows = [line for line in md.splitlines() if line.startswith("| m_a |")]
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["paper", "dense"],
        ["paper", "twossp"],
        ["paper", "shortgpt"],
        ["matched", "dense"],
        ["matched", "twossp"],
        ["matched", "shortgpt"],
    ]
    assert "| m_a | paper | twossp | **8.00** |" in md
    assert (
        "| m_a | matched | twossp | 11.00 |" in md
        and "| m_a | matched | shortgpt | **9.00** |" in md
    )
    tex = t.to_latex()  # a rule between the protocol blocks
    assert tex.count("\\midrule") == 2 and "m\\_a & matched & shortgpt & \\textbf{9.00}" in tex


def test_a_table_refuses_a_cell_holding_two_configurations(results_dir):
    # a published experiment (conf/experiment/table1.yaml) is a reproduction: ambiguity is an
    # error there (a user's own runs are split instead: tests/test_tables_adhoc.py)
    for alpha, ppl in ((1.5, 8.0), (2.0, 9.5)):
        _write_run(
            results_dir,
            "stories260k",
            "twossp",
            0.375,
            DAY2,
            {"ppl": {"wikitext2": ppl}},
            chash=f"alpha{alpha}",
            params={"alpha": alpha, "n_calib_stage1": 32},
            experiment="table1",
        )
    frame = _merged(results_dir)
    with pytest.raises(cells.AmbiguousCellError) as err:
        builders.perplexity_table(frame, experiment="table1")
    message = str(err.value)
    assert "table1_ppl: cell (stories260k, paper, twossp, 37.5%, ppl/wikitext2)" in message
    assert "holds 2 configurations that differ in method.alpha (1.5, 2.0)" in message
    assert "n_calib_stage1" not in message and "ablation view" in message
    with pytest.raises(cells.AmbiguousCellError, match="pruning_time: cell"):
        builders.time_table(frame, experiment="table1")
    with pytest.raises(cells.AmbiguousCellError, match="pruning_time: cell"):
        builders.time_table(frame, split=False)  # every row, asked to refuse


def test_plots_refuse_an_ambiguous_point_outside_an_ablation(results_dir):
    for stage2 in (1, 2):
        _write_run(
            results_dir, "m_a", "twossp", 0.5, DAY2, {"ppl": {"wikitext2": 8.0}},
            chash=f"stage2-{stage2}", params={"n_calib_stage2": stage2}, experiment="table1",
        )  # fmt: skip
    frame = _merged(results_dir)
    with pytest.raises(cells.AmbiguousCellError, match=r"method.n_calib_stage2 \(1, 2\)"):
        plots.all_plots(frame, results_dir / "plots", "table1")
    with pytest.raises(cells.AmbiguousCellError, match="table1_ppl: cell"):
        tables.experiment_tables(frame, "table1")


def test_achieved_sparsity_table_has_three_decimals_per_protocol(results_dir):
    t = builders.achieved_table(_merged(results_dir))
    md = t.to_markdown()
    assert "| model | protocol | method | 25% | 37.5% |" in md
    assert "| m_a | paper | shortgpt | 0.400 | 0.400 |" in md
    assert "| m_a | paper | twossp | 0.250 | 0.375 |" in md
    assert "| m_a | paper | dense |" not in md and "**" not in md.split("\n", 1)[1]


def test_captions_state_what_the_rows_were_computed_with(results_dir):
    notes = " ".join(builders.perplexity_table(_merged(results_dir)).notes)
    assert "each dataset 8 x 8" in notes and "every window of 2048" in notes
    assert "twossp 16 x 64" in notes and "shortgpt 16 x 64" in notes
    assert "cpu / float32" in notes
    assert "2 of 4 runs are more than" in notes  # shortgpt overshoots at both sparsities


def test_tables_render_latex_with_bold_and_escaped_names(results_dir):
    frame = _merged(results_dir)
    tex = builders.perplexity_table(frame).to_latex()
    assert tex.count("\\begin{tabular}") == 1 and "\\bottomrule" in tex
    assert "\\multicolumn{2}{c}{25\\%}" in tex and "model & protocol & method" in tex
    assert "m\\_a & paper & twossp & \\textbf{8.00} & 11.00" in tex
    assert "m\\_a & paper & dense & 5.00" in tex and "\\textbf{5.00}" not in tex
    acc = builders.downstream_table(frame, items=_items(results_dir)).to_latex()
    assert "arc\\_easy" in acc and "\\textbf{61.00}" in acc
    assert "72.00$^\\dagger$ ($\\geq$4.0 pts)" in acc  # a tie, with its detectable difference


def test_downstream_table_average_and_paired_marks(results_dir):
    # The highest value used to be bold whenever no interval overlapped it. Now a paired
    # test decides: on arc_easy twossp is right on every document shortgpt is, and on 6 more
    # (McNemar p = 2 / 2^6 = 0.03): bold; the avg's 2-point lead (a Wald test on the mean of
    # the tasks' paired differences, p = 0.3) and piqa's (2 discordant documents) are ties.
    t = builders.downstream_table(_merged(results_dir), sparsity=0.375, items=_items(results_dir))
    avg = t.values[("avg", "ours")]
    assert avg[("m_a", "paper", "twossp")] == pytest.approx(65.5)
    assert avg[("m_a", "paper", "shortgpt")] == pytest.approx(63.5)
    assert bool(t.bold.loc[("m_a", "paper", "twossp"), ("arc_easy", "ours")])
    assert not t.bold[("avg", "ours")].any() and t.tied[("avg", "ours")].sum() == 2
    assert not t.bold.loc[("m_a", "paper", "dense")].any()
    assert "Paired on 100-200 documents per comparison" in " ".join(t.notes)
    # without per-document outcomes there is no verdict, and the caption says so
    bare = builders.downstream_table(_merged(results_dir), sparsity=0.375)
    assert not bare.bold.any().any() and not bare.tied.any().any()
    assert "No verdict, nothing bold" in " ".join(bare.notes)


def test_acc_norm_rows_get_their_own_table2(results_dir):
    frame = _merged(results_dir)
    norm = frame[frame["metric"] == "acc"].assign(metric="acc_norm")
    norm = norm.assign(value=norm["value"] - 0.01)
    both = pd.concat([frame, norm], ignore_index=True)
    built = {t.name: t for t in builders.all_tables(both, None)}
    assert {"table2_downstream", "table2_downstream_acc_norm"} <= set(built)
    t = built["table2_downstream_acc_norm"]
    assert t.title == "Table 2: downstream accuracy (acc_norm) at 37.5% sparsity"
    assert t.values[("avg", "ours")][("m_a", "paper", "twossp")] == pytest.approx(64.5)
    assert "table2_downstream_acc_norm" not in {t.name for t in builders.all_tables(frame, None)}


def test_time_table_marks_no_method_fastest_from_single_runs(results_dir):
    t = builders.time_table(_merged(results_dir))
    assert "dense" not in t.values.index.get_level_values("method")
    assert t.bold is None and "| **" not in t.to_markdown()  # one run each: no test, no verdict
    assert "| m_a | paper | twossp | 3.00 | 3.00 |" in t.to_markdown()


def test_paper_columns_appear_only_with_a_matching_published_row(results_dir):
    def pub(model):
        row = {"model": model, "method": "twossp", "sparsity": 0.375, "metric": "ppl"}
        return pd.DataFrame([{**row, "dataset": "wikitext2", "value": 9.87, "source_table": "1"}])

    frame = _merged(results_dir)
    t = builders.perplexity_table(frame, published=pub("m_a"))
    assert t.values.loc[("m_a", "paper", "twossp"), ("37.5%", "wikitext2", "paper")] == 9.87
    md = t.to_markdown()
    assert "| 37.5% wikitext2 | (paper) |" in md and "| 10.00 | 9.87 |" in md.replace("**", "")
    assert "(paper)" not in builders.perplexity_table(frame, published=pub("other")).to_markdown()
    assert "(paper)" not in builders.perplexity_table(frame).to_markdown()


def test_published_csv_has_the_documented_columns():
    with open(ROOT / "analysis" / "published.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == published.PUBLISHED_COLUMNS
    assert list(published.load_published().columns) == published.PUBLISHED_COLUMNS


def test_membership_puts_one_run_into_two_experiments_tables(tmp_path):
    root = tmp_path / "r"
    ppl = {"ppl": {"wikitext2": 8.0}}
    _write_run(root, "m", "twossp", 0.5, DAY2, ppl, experiment="ablation_alpha")
    _write_run(root, "m", "shortgpt", 0.5, DAY2, {"ppl": {"wikitext2": 9.0}}, experiment="table1")
    add_members(root, "table1", ["m-paper-twossp-0.5"])  # the sweep found it finished
    frame = _merged(root)
    table1 = builders.perplexity_table(frame, experiment="table1").to_markdown()
    alpha = builders.perplexity_table(frame, experiment="ablation_alpha").to_markdown()
    assert "| m | paper | twossp | **8.00** |" in table1 and "| m | paper | shortgpt |" in table1
    # alone in its column, a method is not "best" of anything
    assert "| m | paper | twossp | 8.00 |" in alpha and "shortgpt" not in alpha
    # the experiments column fallback: a frame without it uses `experiment`
    legacy = frame.drop(columns=["experiments"])
    assert "twossp" not in builders.perplexity_table(legacy, experiment="table1").to_markdown()


def _write_legacy_run(root, method, sparsity, run_id, chash, ppl):
    """A run file of the first schema: settings as JSON, text timestamp, no protocol."""
    frame = _write_run(
        root, "m", method, sparsity, DAY1, {"ppl": {"wikitext2": ppl}}, run_id, chash
    )
    old = frame[[c for c in frame.columns if not c.startswith(("method.", "calib_"))]]
    old = old.drop(columns=["protocol", "model_revision", "model_fingerprint", "dtype", "phase"])
    old = old.assign(method_config=json.dumps({"alpha": 1.5}), created_at=DAY1)
    old.to_parquet(run_path(root, chash))


def test_first_schema_runs_render_as_protocol_unrecorded(tmp_path):
    root = tmp_path / "r"
    for chash, s in (("dense-25", 0.25), ("dense-50", 0.5)):  # one run copied under 2 hashes
        _write_legacy_run(root, "dense", s, "d1", chash, 5.0)
    _write_legacy_run(root, "twossp", 0.5, "t1", "twossp-50", 9.0)
    md = builders.perplexity_table(_merged(root), experiment="synthetic").to_markdown()
    assert "| m | unrecorded | dense | 5.00 |" in md and md.count("| m | unrecorded | dense") == 1
    assert "| m | unrecorded | twossp | 9.00 |" in md and "first schema" in md  # alone: no bold


def test_render_writes_markdown_and_latex(results_dir, tmp_path):
    paths = render.render(builders.all_tables(_merged(results_dir)), tmp_path / "t")
    assert {p.name for p in paths} == {
        f"{n}.{s}"
        for n in ("table1_ppl", "achieved_sparsity", "table2_downstream", "pruning_time")
        for s in ("md", "tex")
    }


# --- ablation views -------------------------------------------------------------------------


def _alpha_sweep(root, alphas=(1.0, 1.5, 2.0), sparsities=(0.25, 0.5)):
    for s in sparsities:
        for a in alphas:
            _write_run(
                root,
                "m",
                "twossp",
                s,
                DAY2,
                {"ppl": {"wikitext2": 10 * s + a, "c4": 20 * s + a}},
                chash=f"a{a}-s{s}",
                params={"alpha": a, "n_calib_stage1": 32},
                experiment="ablation_alpha",
                n_attn=int(2 * a),
            )


def _calib_sweep(root, sizes=(2, 8), seeds=(0, 1, 2)):
    for n in sizes:
        for seed in seeds:
            _write_run(
                root,
                "m",
                "twossp",
                0.5,
                DAY2,
                {"ppl": {"wikitext2": 100.0 / n + seed}},
                chash=f"n{n}-seed{seed}",
                params={"alpha": 1.5, "n_calib_stage1": n},
                calib={**CALIB, "n_samples": 256, "seed": seed, "windows": n},
                experiment="ablation_calib",
            )


def test_ablation_alpha_renders_every_point(tmp_path):
    _alpha_sweep(tmp_path / "r")
    frame = _merged(tmp_path / "r")
    built = ablations.alpha_tables(frame, "ablation_alpha")
    assert [t.name for t in built] == ["ablation_alpha_wikitext2", "ablation_alpha_c4"]
    wiki = built[0]
    assert wiki.values.shape == (2, 3) and not wiki.values.isna().any().any()
    md = wiki.to_markdown()
    assert "| model | protocol | sparsity | alpha 1.0 | alpha 1.5 | alpha 2.0 |" in md
    assert "| m | paper | 25% | **3.50 [2]** | 4.00 [3] | 4.50 [4] |" in md
    assert "| m | paper | 50% | **6.00 [2]** | 6.50 [3] | 7.00 [4] |" in md
    assert "\\multicolumn{3}{c}{alpha}" in wiki.to_latex()
    assert not ablations.calibration_applies(frame, "ablation_alpha")


def test_ablation_calib_renders_mean_and_std_over_seeds(tmp_path):
    _calib_sweep(tmp_path / "r")
    frame = _merged(tmp_path / "r")
    stats = ablations.calibration_stats(frame, "ablation_calib")
    assert list(stats["windows"]) == [2, 8] and list(stats["n"]) == [3, 3]
    assert stats["mean"].tolist() == pytest.approx([51.0, 13.5])
    assert stats["std"].tolist() == pytest.approx([1.0, 1.0])
    assert stats["seeds"].tolist() == [[0, 1, 2], [0, 1, 2]]
    md = ablations.calibration_table(frame, "ablation_calib").to_markdown()
    assert "| model | protocol | sparsity | calibration windows | ppl wikitext2 |" in md
    assert "| m | paper | 50% | 2 | 51.00 ± 1.00 (n=3) |" in md
    assert "| m | paper | 50% | 8 | 13.50 ± 1.00 (n=3) |" in md
    assert not ablations.alpha_applies(frame, "ablation_calib")


def test_ablation_windows_fall_back_to_the_setting_capped_by_n_samples(tmp_path):
    for n in (4, 512):  # no calib_windows recorded; 512 is capped at n_samples = 256
        calib = {**CALIB, "n_samples": 256, "windows": None}
        _write_run(
            tmp_path / "r", "m", "twossp", 0.5, DAY2, {"ppl": {"wikitext2": 1.0 * n}},
            chash=f"n{n}", params={"n_calib_stage1": n}, calib=calib, experiment="x",
        )  # fmt: skip
    assert list(ablations.calibration_stats(_merged(tmp_path / "r"), "x")["windows"]) == [4, 256]


def test_tables_and_plots_cli_render_the_ablation_views(tmp_path, capsys):
    root = tmp_path / "r"
    _alpha_sweep(root)
    _calib_sweep(root)
    merged = collect.main(["--results-dir", str(root)])
    for name, expected in (
        ("ablation_alpha", {"ablation_alpha_wikitext2", "ablation_alpha_c4"}),
        ("ablation_calib", {"ablation_calib"}),
    ):
        args = ["--results", str(merged), "--experiment", name, "--out"]
        paths = tables.main([*args, str(tmp_path / "t" / name)])
        assert {p.stem for p in paths} == expected and {p.suffix for p in paths} == {".md", ".tex"}
        assert "[tables] not rendered: table1_ppl, achieved_sparsity, pruning_time" in (
            capsys.readouterr().out
        )
        pngs = plots.main([*args, str(tmp_path / "p" / name)])
        assert [p.name for p in pngs] == [f"{name}_m_paper.png"]
        assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # everything at once (a user's view of every row): the generic tables split the two
    # sweeps into setting groups; the views, whose cells now mix the sweeps, are named
    paths = tables.main(["--results", str(merged), "--out", str(tmp_path / "t" / "all")])
    printed = capsys.readouterr().out
    assert "table1_ppl" in {p.stem for p in paths}
    assert "| m | paper | method.alpha=1.0, method.n_calib_stage1=32, calib.seed=0 | twossp |" in (
        printed
    )
    assert "[tables] ablation_alpha not rendered: cell (m, paper, 50%, 1.5, ppl/" in printed


# --- runs of one configuration that evaluated different things -----------------------------


def _plain_and_downstream(root, ppl_downstream=8.0, **kw):
    """A plain run (perplexity) and the same configuration with eval=downstream (perplexity
    and accuracy), a day later: different config hashes, every recorded setting equal."""
    _write_run(root, "m", "twossp", 0.375, DAY1, {"ppl": {"wikitext2": 8.0}}, "plain", "h-plain")
    values = {"ppl": {"wikitext2": ppl_downstream}, "acc": {"arc_easy": 0.6, "piqa": 0.7}}
    _write_run(root, "m", "twossp", 0.375, DAY2, values, "down", "h-down", **kw)
    _write_run(root, "m", "shortgpt", 0.375, DAY2, {"ppl": {"wikitext2": 9.0}})


def test_a_plain_and_a_downstream_run_of_one_configuration_share_their_cells(tmp_path):
    _plain_and_downstream(tmp_path / "r")
    frame = _merged(tmp_path / "r")
    ppl = builders.perplexity_table(frame)
    assert ppl.values.loc[("m", "paper", "twossp"), ("37.5%", "wikitext2", "ours")] == 8.0
    assert not any("differ by up to" in n for n in ppl.notes)  # the two runs agree
    acc = builders.downstream_table(frame, items=_items(tmp_path / "r")).to_markdown()
    assert "| m | paper | twossp | 60.00 | 70.00 | 65.00 |" in acc  # the only pruned method
    built = {t.name: t for t in builders.all_tables(frame)}  # every table, nothing refused
    assert set(built) == {"table1_ppl", "achieved_sparsity", "table2_downstream", "pruning_time"}
    runs = plots.all_plots(frame, tmp_path / "plots")
    assert sorted(p.name for p in runs) == [
        "acc_vs_sparsity_m_paper.png",
        "ppl_vs_sparsity_m_paper.png",
    ]


def test_combined_runs_show_the_newest_value_and_say_when_they_disagree(tmp_path):
    _plain_and_downstream(tmp_path / "r", ppl_downstream=8.4)
    t = builders.perplexity_table(_merged(tmp_path / "r"))
    assert t.values.loc[("m", "paper", "twossp"), ("37.5%", "wikitext2", "ours")] == 8.4
    assert any("1 cell(s) were measured by several runs" in n and "5%" in n for n in t.notes)


def test_one_metric_under_two_evaluation_settings_is_still_refused(tmp_path):
    root = tmp_path / "r"
    for windows, chash in ((2, "w2"), (8, "w8")):
        _write_run(root, "m", "twossp", 0.375, DAY2, {"ppl": {"wikitext2": 8.0}}, chash=chash,
                   windows=windows, experiment="table1")  # fmt: skip
    with pytest.raises(cells.AmbiguousCellError) as err:
        builders.perplexity_table(_merged(root), experiment="table1")
    assert "holds 2 configurations that differ in variant.windows (2, 8)" in str(err.value)
    assert "tokens" not in str(err.value)  # a measurement, not a setting
    assert "different evaluation settings" in str(err.value)
    builders.achieved_table(_merged(root))  # one pruning, whatever was evaluated: no refusal


def test_runs_with_equal_settings_that_pruned_differently_are_refused(tmp_path):
    root = tmp_path / "r"
    for n_attn in (1, 2):
        _write_run(root, "m", "twossp", 0.375, DAY2, {"ppl": {"wikitext2": 8.0}},
                   chash=f"attn{n_attn}", n_attn=n_attn)  # fmt: skip
    with pytest.raises(cells.AmbiguousCellError, match=r"pruned differently: plan_n_attn \(1, 2\)"):
        builders.perplexity_table(_merged(root))


# --- verdicts: paired tests, not overlapping intervals ---------------------------------------


def test_perplexity_verdicts_pair_the_windows_not_the_intervals(tmp_path):
    # This test pinned the overlap rule (bold only when the best's interval overlaps no
    # other), which is a test at about p = 0.005 that ignores the shared windows. Now:
    # wikitext2: the intervals overlap, but twossp is lower on every one of the 8 windows
    # (sign-flip p = 2 / 2^8): bold. c4: shortgpt is lower on average, but the per-window
    # differences change sign: a tie, printed with the ratio the 8 windows could detect.
    root = tmp_path / "r"
    shared = np.array(DIFFICULTY)
    swing = 0.2 * np.resize([1.0, -1.0], 8)
    nll = {
        "twossp": {"wikitext2": np.log(8.0) + shared, "c4": np.log(11.0) + shared + swing},
        "shortgpt": {"wikitext2": np.log(9.0) + shared, "c4": np.log(10.5) + shared},
    }
    ci = {"wikitext2": (7.0, 9.5), "c4": (10.0, 12.0)}
    for method, ppl in (("twossp", {"wikitext2": 8.0, "c4": 11.0}),
                        ("shortgpt", {"wikitext2": 9.0, "c4": 10.5})):  # fmt: skip
        lists = {d: v.tolist() for d, v in nll[method].items()}
        _write_run(root, "m", method, 0.25, DAY2, {"ppl": ppl}, ci=ci, window_nll=lists)
    _write_run(root, "m", "dense", 0.0, DAY2, {"ppl": {"wikitext2": 5.0, "c4": 7.0}},
               ci={"wikitext2": (4.9, 5.1)})  # fmt: skip
    t = builders.perplexity_table(_merged(root))
    md = t.to_markdown()
    sd = np.std(np.log(11.0 / 10.5) + swing, ddof=1)
    detectable = np.exp(paired.detectable_t(sd, 8))
    assert f"{detectable:.2f}" == "1.28"
    assert "| m | paper | twossp | **8.00 [7.00, 9.50]** | 11.00 [10.00, 12.00]† (≥1.28x) |" in md
    assert "| m | paper | shortgpt | 9.00 [7.00, 9.50] | 10.50 [10.00, 12.00]† (≥1.28x) |" in md
    assert "| m | paper | dense | 5.00 [4.90, 5.10] | 7.00 |" in md  # never marked
    notes = " ".join(t.notes)
    assert "paired intersection-union rule" in notes and "two-sided 0.05" in notes
    assert "Paired on 8 windows per comparison" in notes
    assert "Holm-adjusted at 0.05 over the columns with a verdict): twossp 1 of 2." in notes
    tex = t.to_latex()
    assert "\\textbf{8.00 [7.00, 9.50]}" in tex
    assert "10.50 [10.00, 12.00]$^\\dagger$ ($\\geq$1.28x)" in tex


def test_no_verdict_without_shared_windows(tmp_path):
    # rows scored with different evaluation settings (here the stream) share no window
    # list, and runs without window losses have none to pair: no bold, the caption says so
    root = tmp_path / "r"
    _write_run(root, "m", "twossp", 0.25, DAY2, {"ppl": {"wikitext2": 8.0}})
    _write_run(root, "m", "shortgpt", 0.25, DAY2, {"ppl": {"wikitext2": 12.0}})
    frame = _merged(root)
    other = frame["method"] == "shortgpt"
    frame.loc[other, "variant"] = frame.loc[other, "variant"].map(
        lambda v: json.dumps({**json.loads(v), "windows_available": 99})
    )
    t = builders.perplexity_table(frame)
    assert not t.bold.any().any() and not t.tied.any().any()
    assert "No verdict, nothing bold" in " ".join(t.notes)


def test_accuracy_prints_stderr_and_decides_by_mcnemar(results_dir):
    # This test pinned ties on the normal intervals; the verdict is now McNemar's on the
    # documents both runs answered. arc_easy: 6 documents only twossp got right (p = 0.03):
    # bold. piqa: 2 only shortgpt got right: tied, with the difference 100 documents at
    # this discordance could detect beside each.
    for method, se in (
        ("twossp", {"arc_easy": 0.01, "piqa": 0.02}),
        ("shortgpt", {"arc_easy": 0.01, "piqa": 0.02}),
    ):
        _write_run(results_dir, "m_a", method, 0.375, DAY3, {"acc": ACC[("m_a", method, 0.375)]},
                   chash=f"acc-{method}", stderr=se)  # fmt: skip
    rows = _merged(results_dir)
    rows = rows[
        (rows["metric"] != "acc") | rows["config_hash"].str.startswith(("acc-", "m_a-paper-dense"))
    ]
    md = builders.downstream_table(rows, items=_items(results_dir)).to_markdown()
    assert "| m_a | paper | twossp | **61.00 ± 1.00** | 70.00 ± 2.00† (≥4.0 pts) |" in md
    assert "| m_a | paper | shortgpt | 55.00 ± 1.00 | 72.00 ± 2.00† (≥4.0 pts) |" in md
    assert "avg: sqrt(sum se^2) / tasks" in md and "McNemar's exact test" in md


def test_comparison_view_pairs_the_reference_with_every_method_and_dense(results_dir):
    frame, items = _merged(results_dir), _items(results_dir)
    found = comparison.comparisons(frame, items)
    assert set(found["rival"]) == {"shortgpt", "dense"} and set(found["reference"]) == {"twossp"}
    row = found[(found["dataset"] == "arc_easy") & (found["rival"] == "shortgpt")].iloc[0]
    assert row["estimate"] == pytest.approx(0.06) and row["n"] == DOCS
    assert row["p"] == pytest.approx(2 / 2**6)  # McNemar: 6 discordant documents, all one way
    assert row["sentence"].startswith(
        "2SSP's accuracy is higher than ShortGPT's on ARC-Easy at 37.5% (difference +6.0 points"
    )
    ppl = found[(found["dataset"] == "wikitext2") & (found["sparsity"] == 0.25)]
    assert ppl["rival"].tolist() == ["shortgpt", "dense"]  # pruned rivals first, then dense
    assert ppl["estimate"].tolist() == pytest.approx([8 / 9, 8 / 5])
    md = comparison.comparison_table(frame, items).to_markdown()
    assert "| model | protocol | sparsity | measure | twossp vs | ratio or difference [95%] |" in md
    assert "| m_a | paper | 25% | ppl wikitext2 | shortgpt | 0.89 [" in md
    assert (
        "| m_a | paper | 37.5% | acc piqa | shortgpt | -2.0 [" in md and "| 0.50 | 4.0 pts |" in md
    )
    # without items, accuracies cannot be paired (perplexity rows keep their window losses)
    bare = comparison.comparison_table(frame).to_markdown()
    assert "| acc piqa | shortgpt | no shared units |" in bare
    assert "| ppl wikitext2 | shortgpt | 0.89 [" in bare and "4 comparison(s) without" in bare


def test_tables_cli_prints_the_paired_comparison_and_reads_the_merged_items(results_dir, capsys):
    merged = collect.main(["--results-dir", str(results_dir)])
    assert "3 with per-unit outcomes" in capsys.readouterr().out
    args = ["--results", str(merged), "--out", str(results_dir / "t"), "--only"]
    tables.main([*args, "paired_comparison", "table2_downstream"])
    out = capsys.readouterr().out
    assert "**Paired comparison: 2SSP against each method and dense**" in out
    assert "| m_a | paper | 37.5% | acc arc_easy | shortgpt | +6.0 [" in out
    assert "| m_a | paper | twossp | **61.00** |" in out  # Table 2 marked from the items
    tables.main([*args, "paired_comparison", "--reference", "shortgpt"])
    out = capsys.readouterr().out
    assert "| shortgpt vs |" in out and "| acc arc_easy | twossp | -6.0 [" in out


def test_error_bars_come_from_the_interval_and_the_task_mean_from_the_stderrs():
    rows = pd.DataFrame({"value": [8.0, 9.0], "lo": [7.0, np.nan], "hi": [8.5, np.nan]})
    assert plots._yerr(rows, 1.0).tolist() == [[1.0, 0.0], [0.5, 0.0]]
    variants = [json.dumps({"stderr": 0.03}), json.dumps({"stderr": 0.04})]
    acc = intervals.with_bounds(pd.DataFrame({
        "method": ["a", "a"], "sparsity": [0.5, 0.5], "dataset": ["t1", "t2"],
        "value": [0.5, 0.7], "variant": variants,
    }))  # fmt: skip
    assert acc["lo"].tolist() == pytest.approx([0.5 - 1.96 * 0.03, 0.7 - 1.96 * 0.04], abs=1e-3)
    mean = plots._task_mean(acc, ["t1", "t2"]).iloc[0]
    assert mean["value"] == pytest.approx(0.6) and mean["se"] == pytest.approx(0.025)  # 0.05 / 2


# --- the notebook's merged file and order ----------------------------------------------------


def test_notebook_merges_when_the_runs_are_newer_than_the_merged_file(tmp_path, monkeypatch):
    root = tmp_path / "r"
    _write_run(root, "m", "twossp", 0.5, DAY2, {"ppl": {"wikitext2": 8.0}})
    monkeypatch.delenv("TWOSSP_RESULTS_FILE", raising=False)
    monkeypatch.setenv("TWOSSP_RESULTS", str(root))
    merged = notebook.results_path()
    assert merged == root / "results.parquet" and len(collect.load(merged)) == 1
    assert not notebook.stale(root, merged)
    _write_run(root, "m", "shortgpt", 0.5, DAY2, {"ppl": {"wikitext2": 9.0}})
    os.utime(run_path(root, "m-paper-shortgpt-0.5"), (merged.stat().st_mtime + 5,) * 2)
    assert notebook.stale(root, merged)
    assert len(collect.load(notebook.results_path())) == 2
    monkeypatch.setenv("TWOSSP_RESULTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no runs under"):
        notebook.results_path()


def test_notebook_leads_with_smollm2_and_labels_stories260k_a_smoke_test(tmp_path, monkeypatch):
    root = tmp_path / "r"
    _write_run(root, "stories260k", "twossp", 0.5, DAY2, {"acc": {"piqa": 0.5}}, experiment="a")
    _write_run(root, "smollm2_135m", "twossp", 0.5, DAY2, {"acc": {"piqa": 0.6}}, experiment="z")
    monkeypatch.delenv("TWOSSP_EXPERIMENT", raising=False)
    frame = _merged(root)
    assert notebook.experiments(frame) == ["z", "a"]
    assert "smoke test" in notebook.heading(frame, "a") and "smoke" not in notebook.heading(
        frame, "z"
    )
    notes = " ".join(builders.downstream_table(frame, sparsity=0.5, experiment="a").notes)
    assert "Smoke test, not a result: stories260k" in notes
    assert "Smoke" not in " ".join(builders.downstream_table(frame, 0.5, experiment="z").notes)


# --- plots ----------------------------------------------------------------------------------


def test_plots_write_pngs_per_model_and_protocol(results_dir, tmp_path):
    paths = plots.all_plots(_merged(results_dir), tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "acc_vs_sparsity_m_a_paper.png",
        "ppl_vs_sparsity_m_a_paper.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_overlapping_methods_get_distinct_markers_and_offsets():
    style = plots.method_style(list(order.METHOD_ORDER))
    assert "dense" not in style and len(style) == 6
    markers, offsets, _ = zip(*style.values(), strict=True)
    assert len(set(markers)) == 6 and len(set(offsets)) == 6
    assert np.isclose(sum(offsets), 0.0) and max(offsets) - min(offsets) < 5  # < 5 pt spread
    assert "pt apart" in plots._offset_label(style)


# --- notebook and a real sweep --------------------------------------------------------------


@pytest.mark.slow
def test_results_notebook_executes_from_another_directory(results_dir, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    _alpha_sweep(results_dir)
    merged = tmp_path / "results.parquet"
    collect.collect([results_dir], merged)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TWOSSP_RESULTS_FILE", str(merged))
    monkeypatch.setenv("TWOSSP_PLOTS_DIR", str(tmp_path / "nbplots"))
    monkeypatch.delenv("TWOSSP_ROOT", raising=False)
    monkeypatch.delenv("TWOSSP_EXPERIMENT", raising=False)
    nb = nbformat.read(ROOT / "analysis" / "results.ipynb", as_version=4)
    # "python3" is the kernel ipykernel provides for the running interpreter (no install step).
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(elsewhere)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "Table 1: perplexity" in text and "**8.00**" in text
    assert "Ablation: 2SSP alpha, perplexity on wikitext2" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert sorted(p.name for p in (tmp_path / "nbplots").rglob("*.png")) == [
        "ablation_alpha_m_paper.png",
        "acc_vs_sparsity_m_a_paper.png",
        "ppl_vs_sparsity_m_a_paper.png",
    ]


@pytest.mark.slow
def test_readme_notebook_command_runs_after_a_plain_and_a_downstream_run(tmp_path):
    # README: `jupyter nbconvert --to html --execute analysis/results.ipynb --output-dir ...`
    # right after the runs, with no `python -m analysis.collect`: the notebook merges itself.
    root = tmp_path / "results"
    _plain_and_downstream(root)
    env = {**os.environ, "TWOSSP_RESULTS": str(root), "TWOSSP_PLOTS_DIR": str(tmp_path / "p")}
    for name in ("TWOSSP_RESULTS_FILE", "TWOSSP_EXPERIMENT", "TWOSSP_ROOT"):
        env.pop(name, None)
    jupyter = Path(sys.executable).with_name("jupyter")
    notebook_path = ROOT / "analysis" / "results.ipynb"
    cmd = [str(jupyter), "nbconvert", "--to", "html", "--execute", str(notebook_path)]
    done = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "html")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "html" / "results.html").read_text()
    assert (root / "results.parquet").exists()
    assert "Table 1: perplexity" in html and "Table 2: downstream accuracy" in html
    assert "configurations that differ" not in html  # no refusal printed
    assert sorted(p.name for p in (tmp_path / "p").rglob("*.png")) == [
        "acc_vs_sparsity_m_paper.png",
        "ppl_vs_sparsity_m_paper.png",
    ]


def _sweep(tmp_path, *overrides):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "model=stories260k",
        "eval.max_windows=2",
        f"paths.results_dir={tmp_path}",
        f"paths.output_dir={tmp_path}/out",
        "progress=false",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_real_ablation_sweeps_on_stories260k_render_every_point(tmp_path, capsys):
    # An experiment overlay is a sweep by itself; command-line values replace its grid.
    _sweep(tmp_path, "experiment=ablation_alpha", "method.alpha=1.0,2.0", "sparsity=0.5")
    _sweep(
        tmp_path,
        "experiment=ablation_calib",
        "method.n_calib_stage1=2,4",
        "calib.seed=0,1",
        "calib.seqlen=128",
    )
    merged = collect.main(["--results-dir", str(tmp_path)])
    frame = collect.load(merged)
    assert frame["config_hash"].nunique() == 6

    out = tmp_path / "tables"
    tables.main(["--results", str(merged), "--experiment", "ablation_alpha", "--out", str(out)])
    tables.main(["--results", str(merged), "--experiment", "ablation_calib", "--out", str(out)])
    printed = capsys.readouterr().out
    alpha = (out / "ablation_alpha_wikitext2.md").read_text()
    calib = (out / "ablation_calib.md").read_text()
    print(alpha, calib, sep="\n")  # shown with -s: the rendered views of a real sweep
    assert "| model | protocol | sparsity | alpha 1.0 | alpha 2.0 |" in alpha
    row = next(line for line in alpha.splitlines() if line.startswith("| stories260k |"))
    assert row.startswith("| stories260k | paper | 50% |") and row.count("[") == 2
    calib_rows = [line for line in calib.splitlines() if line.startswith("| stories260k |")]
    assert [r.split(" | ")[3] for r in calib_rows] == ["2", "4"]
    assert all("±" in r and "(n=2)" in r for r in calib_rows)
    assert "each dataset 2 x 512" in alpha and "twossp 2-4 x 128" in calib
    assert "[tables] wrote" in printed
    pngs = plots.all_plots(frame, tmp_path / "plots", "ablation_alpha")
    pngs += plots.all_plots(frame, tmp_path / "plots", "ablation_calib")
    assert [p.name for p in pngs] == [
        "ablation_alpha_stories260k_paper.png",
        "ablation_calib_stories260k_paper.png",
    ]


# --- calibration draws across methods -------------------------------------------------------


def _draws_sweep(root):
    """2SSP and ShortGPT over three draws (2SSP loses draw 2), and 2SSP at a second budget
    on draw 0, in a second experiment."""
    values = {"twossp": (10.0, 12.0, 20.0), "shortgpt": (15.0, 16.0, 14.0)}
    for method, ppl in values.items():
        for seed, v in enumerate(ppl):
            _write_run(
                root, "m", method, 0.375, DAY2, {"ppl": {"wikitext2": v}},
                chash=f"{method}-{seed}", calib={**CALIB, "seed": seed, "windows": 4},
                experiment="seeds",
            )  # fmt: skip
    _write_run(
        root, "m", "twossp", 0.375, DAY2, {"ppl": {"wikitext2": 9.0}}, chash="twossp-big",
        calib={**CALIB, "seed": 0, "windows": 32}, experiment="seeds_big",
    )  # fmt: skip


def test_draws_table_gives_draw_zero_geometric_mean_and_the_paired_test(tmp_path):
    # This test pinned the arithmetic mean ± std and "lowest in k/n", a count without a
    # test. Now: the geometric mean (exp of the mean log perplexity) ×/÷ the geometric sd,
    # and the ratio to the lowest other method paired by draw, with its sign-flip p.
    _draws_sweep(tmp_path / "r")
    frame = _merged(tmp_path / "r")
    assert draws.applies(frame, "seeds") and not draws.applies(frame, "seeds_big")
    md = draws.draws_table(frame, ["seeds", "seeds_big"]).to_markdown()
    # 2SSP at 4 windows: draws 10, 12, 20 -> 2400^(1/3) = 13.39; against ShortGPT's 15, 16,
    # 14 the per-draw log ratios are -0.41, -0.29, +0.36: |sum| 0.34 is reached by 6 of the
    # 8 sign patterns (p = 0.75), and three draws could never give less than 2/8
    ratio = paired.draws_ratio([10.0, 12.0, 20.0], [15.0, 16.0, 14.0])
    assert ratio.p == pytest.approx(0.75) and f"{ratio.estimate:.2f}" == "0.89"
    assert (
        f"| m | paper | 37.5% | twossp | 4 | 10.00 | 13.39 ×/÷ 1.43 (n=3) | 0.89 "
        f"[{ratio.low:.2f}, {ratio.high:.2f}] vs shortgpt (4 w), p = 0.75, n=3 |"
    ) in md
    # its own 32-window row is not its rival, and shares one draw with ShortGPT: no test
    assert "| m | paper | 37.5% | twossp | 32 | 9.00 | 9.00 (n=1) | no rival with 2+" in md
    assert "| shortgpt | 4 | 15.00 | 14.98 ×/÷ 1.07 (n=3) | 1.12 [" in md
    assert "cannot fall below 2/2^n (0.25 for 3)" in md


def test_tables_cli_reads_several_experiments_together(tmp_path, capsys):
    root = tmp_path / "r"
    _draws_sweep(root)
    merged = collect.main(["--results-dir", str(root)])
    args = ["--results", str(merged), "--out", str(tmp_path / "t")]
    tables.main([*args, "--experiment", "seeds", "--experiment", "seeds_big"])
    out = capsys.readouterr().out
    assert "| m | paper | 37.5% | twossp | 32 | 9.00 |" in out
    tables.main([*args, "--experiment", "seeds"])
    assert "| twossp | 32 |" not in capsys.readouterr().out
    both = ["--experiment", "seeds", "--experiment", "seeds_big"]
    pngs = plots.main(["--results", str(merged), "--out", str(tmp_path / "p"), *both])
    assert [p.name for p in pngs[:2]] == [
        "calibration_draws_m_paper.png",
        "ablation_calib_m_paper.png",
    ]
    # not published experiments: the generic plots too, one per calibration draw and budget
    assert {p.name for p in pngs[2:]} >= {
        "ppl_vs_sparsity_m_paper_calib.seed-0-calib.windows-4.png",
        "ppl_vs_sparsity_m_paper_calib.seed-0-calib.windows-32.png",
    }
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_note_names_the_documents_per_task_and_a_group_per_subtask():
    def variant(limit, samples, subtasks):
        return json.dumps({"limit": limit, "samples": samples, "subtasks": subtasks})

    rows = pd.DataFrame(
        {
            "dataset": ["arc_easy", "piqa", "mmlu", "arc_easy"],
            "variant": [variant(100, 100, 1), variant(100, 100, 1), variant(2, 114, 57), None],
        }
    )
    (note,) = captions.limit_notes(rows)
    assert note.startswith("Subsampled (lm-eval limit): at most 100 documents per task; ")
    assert "mmlu: 2 per subtask (57 subtasks), 114 documents" in note
    assert "the same documents for every method" in note
    mixed = pd.concat([rows, rows.assign(variant=[variant(50, 50, 1)] * 4)])
    assert "limits differ between runs" in captions.limit_notes(mixed)[0]
    assert captions.limit_notes(rows.assign(variant=variant(None, 10, 1))) == []
