"""Results pages: written from a record byte for byte, and logged to W&B offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis import combined, report

FIXTURE = Path(__file__).parent / "fixtures"
RECORD = FIXTURE / "record_report_demo"  # stories260K: dense, 2SSP, ShortGPT; windows, documents
PAGE = FIXTURE / "report_pages" / "report_demo.md"


def test_the_page_regenerates_byte_for_byte_from_its_record(tmp_path):
    page, tables, plots, sentences = report.report(["report_demo"], RECORD, tmp_path)
    assert page.read_text() == PAGE.read_text(), "python -m analysis.report: see PAGE's header"
    names = {t.name for t in tables}
    assert {"table1_ppl", "table2_downstream", "paired_comparison"} <= names
    assert all((tmp_path / "report_demo" / p.name).exists() for p in plots) and plots
    # every verdict sentence is the analysis's, one per paired comparison
    assert any(s.startswith("2SSP's perplexity is lower than ShortGPT's") for s in sentences)
    assert any("cannot be told apart" in s and "could detect" in s for s in sentences)


def test_a_page_never_names_the_machine_it_was_made_on(tmp_path):
    page = report.report(["report_demo"], RECORD, tmp_path)[0]
    assert "/tmp" not in page.read_text() and str(Path.home()) not in page.read_text()


def test_an_unknown_experiment_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report.main(["--experiment", "nosuch", "--record", str(RECORD), "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_the_report_logs_the_paper_tables_to_an_offline_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from twossp.tracking import WandbSettings

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    page, tables, plots, sentences = report.report(["report_demo"], RECORD, tmp_path / "pages")
    settings = WandbSettings(mode="offline", dir=str(tmp_path))
    folder = report.log_to_wandb(page.stem, tables, plots, sentences, settings)
    logged = {p.name.split("_0_")[0]: p for p in (folder / "files" / "media").rglob("*.json")}
    assert {"table1_ppl", "table2_downstream", "paired_comparison", "verdicts"} <= set(logged)
    table1 = json.loads(logged["table1_ppl"].read_text())
    assert "method" in table1["columns"] and len(table1["data"]) == 3  # dense, 2SSP, ShortGPT
    assert len(list((folder / "files" / "media" / "images").rglob("*.png"))) == len(plots)


def _committed_pages() -> list[Path]:
    return sorted((report.PAGES).glob("*.md"))


@pytest.mark.slow
@pytest.mark.parametrize("page", _committed_pages(), ids=lambda p: p.stem)
def test_every_committed_results_page_is_what_its_record_gives(page, tmp_path):
    header = "\n".join(page.read_text().splitlines()[:3])
    if "analysis.combined" in header:  # a page of parts (make smollm2-page)
        parts = re.findall(r"--part ([\w.-]+)", header)
        ranks = [combined.rank_pair(r) for r in re.findall(r"--rank ([\w.-]+:[\w.-]+)", header)]
        text = combined.build(page.stem, parts, ranks, report.RECORD, tmp_path)[0]
        assert text == page.read_text(), f"run: python -m analysis.combined (see {page})"
        return
    experiments = [e.strip("`") for e in re.findall(r"--experiment (\S+)", header)]
    assert experiments, f"{page}: no command in its header"
    again = report.report(experiments, report.RECORD, tmp_path, page.stem)[0]
    assert again.read_text() == page.read_text(), f"run: make report EXPERIMENT={page.stem}"


def test_wall_time_sums_each_runs_start_to_its_write_and_counts_runs_without_a_start():
    import pandas as pd

    t = pd.Timestamp("2026-12-07 10:00", tz="UTC")
    runs = pd.DataFrame(
        {
            "started_at": [t, t + pd.Timedelta(minutes=30)],
            "created_at": [t + pd.Timedelta(minutes=20), t + pd.Timedelta(minutes=95)],
        }
    )
    text = report.wall_time(runs)
    assert text.startswith("1 h 25 min over 2 runs")
    assert "first start to last write 1 h 35 min" in text
    runs.loc[0, "started_at"] = pd.NaT
    assert report.wall_time(runs).startswith("1 h 05 min over 1 runs")
    assert "1 runs predate start times" in report.wall_time(runs)
    assert "not recorded" in report.wall_time(runs.assign(started_at=pd.NaT))


def test_a_saved_inference_replay_becomes_a_section_of_its_experiments_page(tmp_path):
    import shutil

    from bench import inference_replay as replay

    record = tmp_path / "record"
    shutil.copytree(RECORD, record)
    folder = record / "inference_replay" / "report_demo"
    folder.mkdir(parents=True)
    models = []
    for method, scale in (("dense", 1.0), ("twossp", 1.25)):
        models.append(
            replay.Entry(
                method=method, sparsity=0.0 if method == "dense" else 0.375, config_hash=method,
                achieved=0.0, params=10, ppl=None, ppl_interval=(None, None), flops=1 / scale,
                kv_bytes=4, prefill_s=[1 / scale, 1.02 / scale], decode_tps=[scale, scale * 0.98],
                compiled_prefill_s=[0.9 / scale, 0.91 / scale], compiled_decode_tps=[scale] * 2,
            ).saved()
        )  # fmt: skip
    meta = {"model": "stories260k", "protocol": "paper", "device": "cpu", "dtype": "float32",
            "threads": 1, "seqlen": 64, "new_tokens": 4, "rounds": 2, "seed": 0,
            "modes": ["eager", "compiled"]}  # fmt: skip
    (folder / "inference_replay.json").write_text(json.dumps({"meta": meta, "models": models}))
    text = report.report(["report_demo"], record, tmp_path / "out")[0].read_text()
    section = text.split("## What pruning buys, as deployed: `report_demo` re-timed")[1]
    assert "| twossp | 0.375 (0.000) |" in section
    assert "shortfall removed by compiling" in section
    assert str(tmp_path) not in section
    plain = report.report(["report_demo"], RECORD, tmp_path / "plain")[0].read_text()
    assert "as deployed" not in plain


def test_verdicts_on_tasks_at_chance_come_last_under_a_line_saying_they_are_no_evidence():
    import pandas as pd

    found = pd.DataFrame(
        {
            "metric": ["acc", "acc", "ppl"],
            "dataset": ["arc_challenge", "piqa", "c4"],
            "sentence": ["on ARC-C", "on PIQA", "on C4"],
        }
    )
    lines = report.verdicts(found, "twossp", apart=["arc_challenge"])
    assert lines[:2] == ["- on PIQA", "- on C4"]
    assert "not above chance on ARC-Challenge" in lines[3] and lines[-1] == "- on ARC-C"
    assert report.verdicts(found, "twossp") == ["- on ARC-C", "- on PIQA", "- on C4"]
