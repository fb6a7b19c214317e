"""Tables never refuse a user's own runs (issue 26, item 5).

Runs of the experiment ``default`` (no overlay) or of any name not in ``conf/experiment/``
that differ in a setting are split into setting groups, a ``setting`` row level labelled by
the setting (``eval.max_windows=8``), and the paired verdicts compare methods within a group;
a published experiment keeps its one-configuration-per-cell check. ``--only`` refuses an
unknown table, and a refused table does not stop the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import builders, cells, collect, comparison, plots, tables
from tests.test_analysis import DAY1, DAY2, _items, _merged, _write_run
from twossp.results import Metric, RunRecord, add_members, run_path, to_frame, write_run

ROOT = Path(__file__).resolve().parents[1]
# (method, sparsity) -> wikitext2 perplexity, per eval.max_windows: 2SSP is lower on 48
# windows, ShortGPT on 8.
PPL = {
    48: {("dense", 0.0): 5.0, ("twossp", 0.375): 8.0, ("shortgpt", 0.375): 9.0},
    8: {("dense", 0.0): 5.5, ("twossp", 0.375): 10.0, ("shortgpt", 0.375): 9.0},
}


def _two_window_budgets(root, experiment="default"):
    """Every method run with eval.max_windows=48, then again with 8, into one folder."""
    for windows, day in ((48, DAY1), (8, DAY2)):
        for (method, sparsity), ppl in PPL[windows].items():
            _write_run(
                root, "m", method, sparsity, day, {"ppl": {"wikitext2": ppl}},
                chash=f"{method}-w{windows}", windows=windows, max_windows=windows,
                experiment=experiment,
            )  # fmt: skip


def test_runs_differing_in_max_windows_give_a_row_per_setting(tmp_path, capsys):
    root = tmp_path / "r"
    _two_window_budgets(root)
    frame = _merged(root)
    t = builders.perplexity_table(frame, experiment=cells.ADHOC)
    assert list(t.values.index.names) == ["model", "protocol", "setting", "method"]
    md = t.to_markdown()
    # each setting group has its own dense row and its own verdict: on 8 windows ShortGPT
    # is lower on every window (sign-flip p = 2 / 2^8), on 48 windows 2SSP is
    assert "| m | paper | eval.max_windows=8 | shortgpt | **9.00** |" in md
    assert "| m | paper | eval.max_windows=8 | twossp | 10.00 |" in md
    assert "| m | paper | eval.max_windows=48 | twossp | **8.00** |" in md
    assert "| m | paper | eval.max_windows=48 | dense | 5.00 |" in md
    assert md.index("eval.max_windows=8 |") < md.index("eval.max_windows=48 |")
    assert "variant.windows" not in md  # implied by max_windows: not named
    assert any("split into setting groups" in n for n in t.notes)

    merged = collect.main(["--results-dir", str(root)])
    out = tmp_path / "tables"
    for chosen in ([], ["--experiment", "default"]):  # every row, or the ad-hoc experiment
        paths = tables.main(["--results", str(merged), "--out", str(out), *chosen])
        printed = capsys.readouterr().out
        assert {p.stem for p in paths} == {
            "table1_ppl", "achieved_sparsity", "pruning_time", "paired_comparison",
        }  # fmt: skip
        assert "not rendered" not in printed
        assert "| m | paper | eval.max_windows=48 | 37.5% | ppl wikitext2 | shortgpt | 0.89 [" in (
            printed
        )


def test_paired_verdicts_compare_within_a_setting_group(tmp_path):
    root = tmp_path / "r"
    _two_window_budgets(root)
    found = comparison.comparisons(_merged(root), _items(root), experiment="default")
    pairs = found[found["rival"] == "shortgpt"].set_index("setting")
    assert pairs.loc["eval.max_windows=8", "estimate"] == pytest.approx(10 / 9)
    assert pairs.loc["eval.max_windows=8", "n"] == 8
    assert pairs.loc["eval.max_windows=48", "estimate"] == pytest.approx(8 / 9)
    assert pairs.loc["eval.max_windows=48", "n"] == 48
    assert pairs.loc["eval.max_windows=8", "sentence"].startswith(
        "2SSP's perplexity is higher than ShortGPT's on WikiText-2 at 37.5% "
        "(eval.max_windows=8) (ratio 1.11"
    )


def test_a_setting_of_one_method_puts_the_others_in_every_group(tmp_path):
    root = tmp_path / "r"
    for alpha, ppl in ((1.5, 8.0), (2.0, 9.5)):
        _write_run(root, "m", "twossp", 0.375, DAY2, {"ppl": {"wikitext2": ppl}},
                   chash=f"alpha{alpha}", params={"alpha": alpha}, experiment="mine")  # fmt: skip
    _write_run(root, "m", "shortgpt", 0.375, DAY2, {"ppl": {"wikitext2": 9.0}}, experiment="mine")
    _write_run(root, "m", "dense", 0.0, DAY2, {"ppl": {"wikitext2": 5.0}}, experiment="mine")
    frame = _merged(root)
    md = builders.perplexity_table(frame, experiment="mine").to_markdown()
    assert "| m | paper | method.alpha=1.5 | twossp | **8.00** |" in md
    assert "| m | paper | method.alpha=2.0 | shortgpt | **9.00** |" in md
    assert md.count("| shortgpt |") == 2 and md.count("| dense |") == 2
    times = builders.time_table(frame, experiment="mine").to_markdown()
    assert "| m | paper | method.alpha=2.0 | twossp | 3.00 |" in times  # no verdict: one run
    names = [t.name for t in tables.experiment_tables(frame, "mine", skipped=[])]
    assert names[0] == "ablation_alpha_wikitext2" and "table1_ppl" in names


def test_a_published_experiment_still_refuses(tmp_path, capsys):
    root = tmp_path / "r"
    _two_window_budgets(root, experiment="cpu_smollm2")  # conf/experiment/cpu_smollm2.yaml
    frame = _merged(root)
    assert cells.strict("cpu_smollm2") and not cells.strict("default")
    with pytest.raises(cells.AmbiguousCellError) as err:
        builders.perplexity_table(frame, experiment="cpu_smollm2")
    assert "differ in variant.max_windows (8, 48)" in str(err.value)

    # the CLI names each refused table in one line and renders the others
    merged = collect.main(["--results-dir", str(root)])
    args = ["--results", str(merged), "--out", str(tmp_path / "t"), "--experiment"]
    paths = tables.main([*args, "cpu_smollm2"])
    printed = capsys.readouterr().out
    assert {p.stem for p in paths} == {"achieved_sparsity", "pruning_time"}
    refused = [line for line in printed.splitlines() if "not rendered" in line]
    assert [line.split(" not rendered")[0] for line in refused] == [
        "[tables] table1_ppl",
        "[tables] paired_comparison",
    ]
    assert "holds 2 configurations that differ in variant.max_windows" in refused[0]


def test_exit_2_only_when_every_table_is_refused(tmp_path, capsys):
    root = tmp_path / "r"
    for stage2 in (1, 2):
        _write_run(root, "m", "twossp", 0.5, DAY2, {"ppl": {"wikitext2": 8.0}},
                   chash=f"stage2-{stage2}", params={"n_calib_stage2": stage2},
                   experiment="table1")  # fmt: skip
    merged = collect.main(["--results-dir", str(root)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        tables.main(["--results", str(merged), "--out", str(tmp_path / "t"), "--experiment",
                     "table1"])  # fmt: skip
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out.count("not rendered: cell") == 3  # table1_ppl, achieved, pruning_time
    assert "every table was refused" in captured.err


def test_only_refuses_an_unknown_table_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        tables.main(["--results", str(tmp_path / "absent.parquet"), "--only", "nosuch"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'nosuch'" in err
    for name in ("table1_ppl", "pruning_time", "paired_comparison", "inference_speedup"):
        assert name in err
    assert tables.known_table("ablation_alpha_c4") and not tables.known_table("ablation_alpha_")


def test_plots_draw_one_figure_per_setting_group(tmp_path):
    root = tmp_path / "r"
    _two_window_budgets(root)
    paths = plots.all_plots(_merged(root), tmp_path / "p", "default")
    assert sorted(p.name for p in paths) == [
        "ppl_vs_sparsity_m_paper_eval.max_windows-48.png",
        "ppl_vs_sparsity_m_paper_eval.max_windows-8.png",
    ]


# --- the inference speed-up table ------------------------------------------------------------

MACHINE = {"device": "cpu", "device_name": "Test CPU", "dtype": "float32", "threads": 2,
           "batch_size": 1}  # fmt: skip


def _timed_run(root, method, sparsity, max_windows, prefill_ms, ppl, experiment="default"):
    chash = f"{method}-{sparsity}-w{max_windows}"
    record = RunRecord(
        run_id=chash, config_hash=chash, experiment=experiment, model="tiny", model_path="tiny",
        method=method, method_params={}, target_sparsity=sparsity, achieved_sparsity=sparsity,
        params_before=1000, params_after=int(1000 * (1 - sparsity)), block_params_before=800,
        block_params_after=int(800 * (1 - sparsity)), prune_seconds=1.0, seed=0,
        protocol="paper", git_sha="x", versions={},
    )  # fmt: skip
    metrics = [
        Metric("ppl", "wikitext2", ppl, {"seqlen": 64, "max_windows": max_windows}),
        Metric("prefill_latency", "wikitext2", prefill_ms, {**MACHINE, "seqlen": 64}, unit="ms"),
        Metric("decode_throughput", "wikitext2", 100.0 / prefill_ms,
               {**MACHINE, "prompt_tokens": 8, "new_tokens": 4}, unit="tokens/s"),
        Metric("kv_cache_bytes_per_token", None, 512.0, MACHINE, unit="bytes"),
        Metric("weight_bytes", None, 4000.0 * (1 - sparsity), MACHINE, unit="bytes"),
    ]  # fmt: skip
    write_run(to_frame(record, metrics), run_path(root, chash))
    add_members(root, experiment, [chash])


def test_speedup_table_splits_ad_hoc_runs_and_refuses_a_published_experiment(tmp_path):
    for experiment in ("default", "cpu_smollm2"):
        root = tmp_path / experiment
        _timed_run(root, "dense", 0.0, 8, 10.0, 5.0, experiment)
        _timed_run(root, "twossp", 0.375, 8, 8.0, 9.0, experiment)
        _timed_run(root, "twossp", 0.375, 48, 8.2, 8.0, experiment)
        frame = _merged(root)
        if experiment == "cpu_smollm2":
            with pytest.raises(cells.AmbiguousCellError, match="inference_speedup"):
                tables.speedup(frame, experiment)
            continue
        t = tables.speedup(frame, experiment)
        assert list(t.values.index.names) == ["model", "protocol", "setting", "method", "sparsity"]
        ppl = t.values["ppl wikitext2"]
        assert ppl[("tiny", "paper", "eval.max_windows=8", "twossp", "37.5%")] == 9.0
        assert ppl[("tiny", "paper", "eval.max_windows=48", "twossp", "37.5%")] == 8.0
        speed = t.values["prefill x"]
        assert speed[("tiny", "paper", "eval.max_windows=48", "twossp", "37.5%")] == pytest.approx(
            10.0 / 8.2
        )


@pytest.mark.slow
def test_notebook_shows_ad_hoc_runs_split_with_speedup_and_comparison(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    root = tmp_path / "r"
    _two_window_budgets(root)
    _timed_run(root, "dense", 0.0, 8, 10.0, 5.0)
    _timed_run(root, "twossp", 0.375, 8, 8.0, 9.0)
    _timed_run(root, "twossp", 0.375, 48, 8.2, 8.0)
    monkeypatch.setenv("TWOSSP_RESULTS", str(root))
    monkeypatch.setenv("TWOSSP_PLOTS_DIR", str(tmp_path / "plots"))
    for name in ("TWOSSP_RESULTS_FILE", "TWOSSP_EXPERIMENT", "TWOSSP_ROOT"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(ROOT / "analysis" / "results.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| m | paper | eval.max_windows=8 | shortgpt | **9.00** |" in text
    assert "**Paired comparison: 2SSP against each method and dense**" in text
    assert "**What pruning buys: speed, KV cache, perplexity**" in text
    assert "| tiny | paper | eval.max_windows=48 | twossp | 37.5% |" in text
    assert "refused" not in text.lower() and "not rendered" not in text
