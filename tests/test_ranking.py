"""analysis.ranking: orders of pruned methods told apart by paired tests, and reversals
between two experiments (only where both tell a pair apart)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import ranking
from analysis.report import load_record

RECORD = Path(__file__).parent / "fixtures" / "record_report_demo"
COLUMN = {"model": "m", "protocol": "paper", "sparsity": 0.375, "dataset": "wikitext2"}


def _pairs(rows) -> pd.DataFrame:
    """(a, b, ppl_a, ppl_b, p_holm) rows of one column."""
    return pd.DataFrame(
        [
            {**COLUMN, "a": a, "b": b, "ppl_a": pa, "ppl_b": pb, "ratio": pa / pb, "p": p,
             "p_holm": p, "detectable": 1.2, "n": 48}
            for a, b, pa, pb, p in rows
        ]
    )  # fmt: skip


def test_the_order_joins_told_apart_neighbours_with_less_than_and_the_rest_with_about():
    pairs = _pairs(
        [
            ("twossp", "evopress", 10, 20, 0.001),
            ("twossp", "shortgpt", 10, 21, 0.001),
            ("evopress", "shortgpt", 20, 21, 0.4),
        ]
    )
    assert ranking.order_text(pairs) == "2SSP < EvoPress ≈ ShortGPT"


def test_a_reversal_needs_both_experiments_to_tell_the_pair_apart():
    first = _pairs(
        [
            ("twossp", "evopress", 10, 20, 0.001),
            ("twossp", "shortgpt", 10, 30, 0.001),
            ("evopress", "shortgpt", 20, 30, 0.01),
        ]
    )
    second = _pairs(
        [
            ("twossp", "shortgpt", 10, 12, 0.2),  # not told apart here
            ("twossp", "evopress", 10, 40, 0.001),
            ("shortgpt", "evopress", 12, 40, 0.001),  # reversed against first
        ]
    )
    found = ranking.compare_orders(first, second).iloc[0]
    assert found["reversed"] == [("shortgpt", "evopress")]
    assert found["one_only"] == [("twossp", "shortgpt", "first", 1.2)]
    assert found["pairs"] == 3


def test_an_experiment_ranked_against_itself_does_not_differ():
    frame, items = load_record(RECORD)
    lines = ranking.ranking_lines(frame, items, "report_demo", "report_demo")
    assert lines[0].startswith("| model | protocol | sparsity | dataset |")
    assert lines[-1].startswith("**The ranking does not differ**: none of")
    rows = [line for line in lines if line.startswith("| stories260k")]
    assert rows and all(r.split(" | ")[-1] == r.split(" | ")[-2] + " |" for r in rows)
