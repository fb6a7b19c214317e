"""analysis/: merge and dedupe run files, paper tables (bold best, LaTeX), plots, notebook."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from analysis import collect, plots, tables
from twossp.results import Metric, RunRecord, run_path, to_frame, write_run

ROOT = Path(__file__).resolve().parents[1]

# (model, method, sparsity) -> {dataset: ppl}; accuracies below. Dense is the best everywhere
# but never bold; twossp wins wikitext2, shortgpt wins c4.
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


def _write_run(results_dir, model, method, sparsity, created, values, run_id=None, chash=None):
    record = RunRecord(
        run_id=run_id or f"{method}{sparsity}",
        config_hash=chash or f"{model}-{method}-{sparsity}",
        experiment="synthetic",
        model=model,
        model_path="/m",
        method=method,
        method_config={},
        target_sparsity=sparsity,
        achieved_sparsity=sparsity,
        params_before=100,
        params_after=int(100 * (1 - sparsity)),
        block_params_before=80,
        block_params_after=60,
        prune_seconds=SECONDS[method],
        seed=0,
        git_sha="x",
        versions={},
    )
    metrics = [Metric("ppl", d, v, {"seqlen": 8}) for d, v in values.get("ppl", {}).items()]
    metrics += [
        Metric("acc", t, v, {"task_version": "1.0", "limit": None})
        for t, v in values.get("acc", {}).items()
    ]
    frame = to_frame(record, metrics).assign(created_at=created)
    write_run(frame, run_path(results_dir, record.config_hash))
    return frame


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    for key, ppl in PPL.items():
        _write_run(root, *key, "2026-01-02T00:00:00+00:00", {"ppl": ppl, "acc": ACC.get(key, {})})
    return root


def test_collect_merges_and_keeps_the_newest_run_per_config(results_dir, tmp_path):
    other = tmp_path / "other"  # an older and a newer copy of twossp@25% from another machine
    _write_run(
        other,
        "m_a",
        "twossp",
        0.25,
        "2026-01-01T00:00:00+00:00",
        {"ppl": {"wikitext2": 99.0, "c4": 99.0}},
        run_id="old",
    )
    _write_run(
        tmp_path / "third",
        "m_a",
        "twossp",
        0.25,
        "2026-01-03T00:00:00+00:00",
        {"ppl": {"wikitext2": 7.5, "c4": 10.0}},
        run_id="new",
    )
    out = tmp_path / "merged" / "results.parquet"
    merged = collect.collect([results_dir, other, tmp_path / "third"], out)

    assert out.exists() and len(pd.read_parquet(out)) == len(merged)
    assert merged["config_hash"].nunique() == len(PPL)
    twossp = merged[(merged["method"] == "twossp") & (merged["target_sparsity"] == 0.25)]
    assert set(twossp["run_id"]) == {"new"}
    assert twossp.set_index("dataset").loc["wikitext2", "value"] == 7.5


def test_collect_keeps_a_reused_run_under_each_of_its_configs(tmp_path):
    # dense computed once ("d1") and copied under a second sparsity's hash; later the first
    # config is recomputed ("d2"): each hash keeps exactly its newest run.
    ppl = {"ppl": {"wikitext2": 5.0}}
    for chash, created, run_id in (
        ("dense-a", "2026-01-01T00:00:00+00:00", "d1"),
        ("dense-b", "2026-01-01T00:00:00+00:00", "d1"),
    ):
        _write_run(tmp_path / "r1", "m", "dense", 0.0, created, ppl, run_id=run_id, chash=chash)
    _write_run(
        tmp_path / "r2", "m", "dense", 0.0, "2026-01-02T00:00:00+00:00", ppl, "d2", "dense-a"
    )
    merged = collect.collect([tmp_path / "r1", tmp_path / "r2"])
    pairs = set(zip(merged["config_hash"], merged["run_id"], strict=True))
    assert pairs == {("dense-a", "d2"), ("dense-b", "d1")} and len(merged) == 2


def test_collect_cli_writes_results_parquet(results_dir):
    out = collect.main(["--results-dir", str(results_dir)])
    assert out == results_dir / "results.parquet" and out.exists()


def _merged(results_dir):
    return collect.collect([results_dir])


def test_perplexity_table_bolds_the_best_pruned_value_per_column(results_dir):
    t = tables.perplexity_table(_merged(results_dir))
    md = t.to_markdown()
    assert "| m_a | twossp | **8.00** |  | 11.00 |  | **10.00** |  | 14.00 |" in md
    assert "| m_a | shortgpt | 9.00 |  | **10.50** |  | 12.00 |  | **13.00** |" in md
    # dense: one row, repeated under each sparsity, never bold although it is the lowest
    assert md.count("| m_a | dense |") == 1
    assert "| m_a | dense | 5.00 |  | 7.00 |  | 5.00 |  | 7.00 |" in md
    assert "25% wikitext2 | (paper)" in md


def test_tables_render_latex_with_bold_and_escaped_names(results_dir):
    frame = _merged(results_dir)
    tex = tables.perplexity_table(frame).to_latex()
    assert tex.count("\\begin{tabular}") == 1 and "\\bottomrule" in tex
    assert "\\multicolumn{4}{c}{25\\%}" in tex and "\\multicolumn{2}{c}{wikitext2}" in tex
    assert "m\\_a & twossp & \\textbf{8.00} &  & 11.00" in tex
    assert "m\\_a & dense & 5.00" in tex and "\\textbf{5.00}" not in tex
    acc = tables.downstream_table(frame).to_latex()
    assert "arc\\_easy" in acc and "\\textbf{61.00}" in acc and "\\textbf{72.00}" in acc


def test_downstream_table_average_and_highest_is_bold(results_dir):
    t = tables.downstream_table(_merged(results_dir), sparsity=0.375)
    avg = t.values[("avg", "ours")]
    assert avg[("m_a", "twossp")] == pytest.approx(65.5)
    assert avg[("m_a", "shortgpt")] == pytest.approx(63.5)
    assert bool(t.bold.loc[("m_a", "twossp"), ("avg", "ours")])
    assert not t.bold.loc[("m_a", "dense")].any()


def test_time_table_bolds_the_fastest(results_dir):
    t = tables.time_table(_merged(results_dir))
    assert "dense" not in t.values.index.get_level_values(1)
    assert bool(t.bold.loc[("m_a", "twossp"), ("37.5%", "ours")])
    assert "**3.00**" in t.to_markdown()


def test_paper_column_reads_published_numbers(results_dir):
    pub = pd.DataFrame(
        [
            {
                "model": "m_a",
                "method": "twossp",
                "sparsity": 0.375,
                "metric": "ppl",
                "dataset": "wikitext2",
                "value": 9.87,
                "source_table": "Table 1",
            }
        ]
    )
    t = tables.perplexity_table(_merged(results_dir), published=pub)
    assert t.values.loc[("m_a", "twossp"), ("37.5%", "wikitext2", "paper")] == 9.87
    assert "| 10.00 | 9.87 |" in t.to_markdown().replace("**", "")
    empty = tables.perplexity_table(_merged(results_dir))  # the shipped, empty published.csv
    assert empty.values.xs("paper", axis=1, level=2).isna().all().all()


def test_published_csv_ships_header_only():
    with open(ROOT / "analysis" / "published.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [tables.PUBLISHED_COLUMNS]


def test_render_writes_markdown_and_latex(results_dir, tmp_path):
    paths = tables.render(tables.all_tables(_merged(results_dir)), tmp_path / "t")
    assert {p.name for p in paths} == {
        f"{n}.{s}"
        for n in ("table1_ppl", "table2_downstream", "pruning_time")
        for s in ("md", "tex")
    }


def test_plots_write_pngs(results_dir, tmp_path):
    paths = plots.all_plots(_merged(results_dir), tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["acc_vs_sparsity_m_a.png", "ppl_vs_sparsity_m_a.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


@pytest.mark.slow
def test_results_notebook_executes(results_dir, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    merged = tmp_path / "results.parquet"
    collect.collect([results_dir], merged)
    monkeypatch.setenv("TWOSSP_RESULTS_FILE", str(merged))
    monkeypatch.setenv("TWOSSP_PLOTS_DIR", str(tmp_path / "nbplots"))
    nb = nbformat.read(ROOT / "analysis" / "results.ipynb", as_version=4)
    # "python3" is the kernel ipykernel provides for the running interpreter (no install step).
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(ROOT / "analysis")}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "Table 1: perplexity" in text and "**8.00**" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    assert sorted(p.name for p in (tmp_path / "nbplots").glob("*.png")) == [
        "acc_vs_sparsity_m_a.png",
        "ppl_vs_sparsity_m_a.png",
    ]
