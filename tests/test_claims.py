"""The paper's claims judged from paired comparisons: holds, does not hold, or undecided."""

from __future__ import annotations

import pandas as pd

from analysis import claims


def _comparisons(rows):
    cols = ["metric", "dataset", "sparsity", "rival", "estimate", "p", "detectable"]
    return pd.DataFrame(rows, columns=cols)


def test_a_claim_holds_only_when_every_comparison_is_won():
    won = _comparisons(
        [("ppl", "wikitext2", 0.375, "shortgpt", 0.5, 0.001, 1.1)] * 2
        + [("ppl", "wikitext2", 0.375, "dense", 3.0, 0.001, 1.1)]  # dense never counts
    )
    assert (
        "**holds** for the baselines that ran. 2SSP is lower in 2 of 2"
        in claims.perplexity_claim(won)
    )
    open_ = _comparisons(
        [
            ("ppl", "c4", 0.375, "shortgpt", 0.5, 0.001, 1.1),
            ("ppl", "c4", 0.375, "blockpruner", 0.95, 0.30, 1.25),
        ]
    )
    text = claims.perplexity_claim(open_)
    assert (
        "**cannot be told apart at this size** for the baselines that ran. 2SSP is lower in 1 of 2"
        in text
    )
    assert "ratios up to 1.25" in text


def test_a_claim_fails_when_a_baseline_wins_after_holm():
    lost = _comparisons(
        [
            ("ppl", "c4", 0.375, "shortgpt", 0.5, 0.001, 1.1),
            ("ppl", "ptb", 0.5, "slicegpt", 1.4, 0.001, 1.1),
        ]
    )
    text = claims.perplexity_claim(lost)
    assert "**does not hold**" in text and "SliceGPT is lower on PTB at 50.0%" in text
    # one loss at p = 0.04 among several comparisons does not survive Holm
    weak = _comparisons(
        [("ppl", "c4", 0.375, "slicegpt", 1.1, 0.04, 1.1)] * 1
        + [("ppl", "c4", 0.375, "shortgpt", 1.1, 0.04, 1.1)]
    )
    assert "**does not hold**" not in claims.perplexity_claim(weak)


def test_a_task_is_used_only_where_dense_is_above_chance():
    right = [1.0] * 70 + [0.0] * 30
    items = pd.DataFrame(
        {
            "config_hash": ["d"] * 100 + ["e"] * 100,
            "kind": ["document"] * 200,
            "dataset": ["piqa"] * 100 + ["winogrande"] * 100,
            "acc": right + [1.0] * 52 + [0.0] * 48,
            "loglik": [[-1.0, -2.0]] * 200,  # two choices: chance is 0.5
        }
    )
    assert claims.above_chance(items, "d", "piqa") == (True, 0.7, 0.5)
    assert claims.above_chance(items, "e", "winogrande")[0] is False


def test_pruning_time_is_tested_over_draws_and_untested_from_single_runs():
    def runs(method, seconds):
        return [
            {
                "config_hash": f"{method}{i}",
                "method": method,
                "model": "m",
                "protocol": "paper",
                "target_sparsity": 0.375,
                "calib_seed": i,
                "prune_seconds": s,
                "metric": "ppl",
                "experiments": ["x"],
                "experiment": "x",
            }
            for i, s in enumerate(seconds)
        ]

    frame = pd.DataFrame(runs("twossp", [10, 11, 9]) + runs("evopress", [2000, 2300, 1900]))
    text = claims.time_claim(frame, "x")
    assert "**holds**" in text and "EvoPress 206.7x" in text and "3 draws" in text
    single = pd.DataFrame(runs("twossp", [10]) + runs("blockpruner", [50]))
    assert "**untested (one run per method)**" in claims.time_claim(single, "x")
    replayed = single.assign(plan_from=[None, "blockpruner-elsewhere"])  # its seconds: copied
    assert "no baseline timed beside 2SSP here" in claims.time_claim(replayed, "x")


def test_sparsities_are_not_mistaken_for_calibration_draws():
    rows = [
        {
            "config_hash": f"{m}{s}",
            "method": m,
            "model": "m",
            "protocol": "paper",
            "target_sparsity": s,
            "calib_seed": 0,
            "prune_seconds": t * (1 + s),
            "metric": "ppl",
            "experiments": ["x"],
            "experiment": "x",
        }
        for m, t in (("twossp", 10.0), ("evopress", 600.0))
        for s in (0.25, 0.375, 0.5)
    ]
    text = claims.time_claim(pd.DataFrame(rows), "x")
    assert "**untested (one run per method)**" in text and "EvoPress 60.0x (one run each)" in text
