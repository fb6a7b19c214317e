"""analysis.combined: one page of several experiments, each its own part."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import combined

RECORD = Path(__file__).parent / "fixtures" / "record_report_demo"


def test_a_combined_page_holds_claims_sweeps_ranking_and_each_part_demoted(tmp_path):
    text, tables, plots = combined.build(
        "demo", ["report_demo"], [("report_demo", "report_demo")], RECORD, tmp_path
    )
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads[:4] == [
        "# Results: demo",
        "## The paper's claims, part by part",
        "## Each sweep",
        "## Ranking: `report_demo` against `report_demo`",
    ]
    assert "## Part: `report_demo`" in heads and "### Where it ran" in heads
    assert "# Results: report_demo" not in text  # the part's own title is dropped
    assert "| `report_demo` | 3 |" in text  # its sweep: three runs
    assert all(t.name.startswith("report_demo/") for t in tables) and plots
    again = combined.build(
        "demo", ["report_demo"], [("report_demo", "report_demo")], RECORD, tmp_path
    )
    assert again[0] == text  # byte for byte from the record


def test_an_unknown_part_or_a_malformed_rank_is_refused_in_one_line(tmp_path, capsys):
    for argv in (
        ["--name", "x", "--part", "nosuch"],
        ["--name", "x", "--part", "report_demo", "--rank", "report_demo"],
    ):
        with pytest.raises(SystemExit) as stop:
            combined.main([*argv, "--record", str(RECORD), "--out", str(tmp_path)])
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_parts_description_is_its_configurations_opening_comment_without_commands():
    lines = combined.description("cpu_smollm2_authors")
    assert lines[0] == "From `conf/experiment/cpu_smollm2_authors.yaml`:"
    quoted = lines[2:-1]
    assert quoted and all(line.startswith(">") for line in quoted)
    assert not any("@package" in line or "python " in line for line in quoted)
    assert "> - BlockPruner: a whole window (paper: one of 2,048);" in quoted
    assert combined.description("report_demo") == []  # no configuration: nothing quoted


def test_the_combined_page_logs_every_parts_tables_to_an_offline_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    argv = ["--name", "demo", "--part", "report_demo", "--record", str(RECORD)]
    combined.main([*argv, "--out", str(tmp_path / "pages"), "--logger", "wandb"])
    media = next((tmp_path / "wb").rglob("files/media"))
    logged = {p.parent.name + "/" + p.name.split("_0_")[0] for p in media.rglob("*.json")}
    assert {"report_demo/table1_ppl", "report_demo/paired_comparison"} <= logged
