"""The 2SSP paper's three claims, each judged from the paired tests of an experiment.

The paper (Sandri et al., 2025, abstract) claims that 2SSP (1) outperforms the five baselines
on language modelling (perplexity on three corpora), (2) outperforms them on the six downstream
tasks, and (3) prunes up to two orders of magnitude faster. Each claim gets one sentence:

- **holds**: every comparison of 2SSP with a baseline that the claim covers is won by a paired
  test at 0.05 (the intersection-union rule: a claim about every comparison needs each of them
  at 0.05, no correction);
- **does not hold**: at least one baseline is better by a test that survives Holm's correction
  over the claim's comparisons;
- **cannot be told apart at this size**: neither, with how many comparisons were won and the
  largest difference the design could have missed (the detectable difference at 80% power).

Downstream tasks at which the dense model itself is not above chance (a one-sided binomial
test of its accuracy against the mean chance ``1 / choices`` of its documents, at 0.05) are
reported apart and not used. Pruning time is measured once per run (no units to pair): it is
tested only where methods ran several calibration draws (a paired t test over draws of the log
time ratio); otherwise the sentence gives the measured ratios and says they are untested. Runs
that replayed another run's plan (``plan_from``) pruned nothing and are left out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import paired
from analysis.cells import DENSE, replayed, select, with_sparsity
from analysis.comparison import DATASET_NAMES
from analysis.comparison import method_name as _name
from analysis.verdicts import p_text
from twossp.methods.registry import method_names

ALPHA = paired.ALPHA
CLAIMS = {
    "perplexity": "2SSP has lower perplexity than every baseline",
    "downstream": "2SSP has higher downstream accuracy than every baseline",
    "pruning_time": "2SSP prunes up to two orders of magnitude faster than the baselines",
}


def _judge(rows: pd.DataFrame, better: int) -> tuple[str, int, int, pd.DataFrame]:
    """``(verdict, won, n, lost)`` over comparisons; ``better`` is the direction 2SSP wins."""
    p = rows["p"].to_numpy(dtype=float)
    effect = np.sign(np.log(rows["estimate"]) if better < 0 else rows["estimate"])
    won = int(((p < ALPHA) & (effect == better)).sum())
    against = (effect == -better) & ~np.isnan(p)
    adjusted = paired.holm(np.where(against, p, 1.0))
    lost = rows[against & (adjusted < ALPHA)]
    if len(lost):
        return "does not hold", won, len(rows), lost
    if won == len(rows) and len(rows):
        return "holds", won, len(rows), lost
    return "cannot be told apart at this size", won, len(rows), lost


def _missing(rows: pd.DataFrame, reference: str = "twossp") -> str:
    """Which registered baselines the comparisons lack ("" when none)."""
    baselines = [m for m in method_names(pruning_only=True) if m != reference]
    absent = [m for m in baselines if m not in set(rows["rival"])]
    if not absent:
        return ""
    return f" Not run here, so not judged: {', '.join(_name(m) for m in absent)}."


def _sentence(head: str, rows: pd.DataFrame, better: int, family: str, loss, hidden) -> str:
    """A claim's sentence: its verdict, the comparisons won, the baseline that beats 2SSP
    (``loss(row)``) or what the undecided comparisons could hide (``hidden(detectable)``)."""
    verdict, won, n, lost = _judge(rows, better)
    way = "lower" if better < 0 else "higher"
    text = f"{head}: **{verdict}** for the baselines that ran. 2SSP is {way} in {won} of {n} "
    text += f"paired comparisons ({family}) at 0.05"
    if len(lost):
        worst = lost.sort_values("estimate", ascending=better > 0).iloc[0]
        text += f"; {loss(worst)}"
    open_ = rows[rows["p"] >= ALPHA]
    if len(open_) and not len(lost):
        text += f"; the {len(open_)} undecided could hide {hidden(open_['detectable'].max())}"
    return text + "."


def perplexity_claim(comparisons: pd.DataFrame) -> str:
    """The perplexity claim from :func:`analysis.comparison.comparisons`'s rows."""
    head = f"Perplexity ({CLAIMS['perplexity']})"
    rows = comparisons[(comparisons["metric"] == "ppl") & (comparisons["rival"] != DENSE)]
    rows = rows[rows["p"].notna()]
    if rows.empty:
        return f"{head}: no paired comparisons in this experiment."

    def loss(row) -> str:
        return (
            f"{_name(row['rival'])} is lower on {DATASET_NAMES.get(row['dataset'])} at "
            f"{row['sparsity']:.1%} (ratio 2SSP / {_name(row['rival'])} {row['estimate']:.2f}, "
            "Holm-adjusted over the claim's comparisons)"
        )

    text = _sentence(
        head,
        rows,
        -1,
        "baseline x corpus x sparsity",
        loss,
        lambda d: f"ratios up to {d:.2f} (80% power)",
    )
    return text + _missing(rows)


def above_chance(items: pd.DataFrame, config_hash: str, task: str) -> tuple[bool, float, float]:
    """Whether a run's accuracy on ``task`` is above chance (one-sided binomial normal test
    at 0.05), with the accuracy and the chance level (mean of ``1 / choices``)."""
    docs = items[
        (items["config_hash"] == config_hash)
        & (items["kind"] == "document")
        & (items["dataset"] == task)
    ]
    if docs.empty:
        return False, math.nan, math.nan
    acc = float(docs["acc"].mean())
    chance = float(docs["loglik"].map(lambda v: 1 / len(v) if len(v) else math.nan).mean())
    se = math.sqrt(chance * (1 - chance) / len(docs))
    z = (acc - chance) / se if se > 0 else 0.0
    p = 0.5 * math.erfc(z / math.sqrt(2))
    return p < ALPHA, acc, chance


def at_chance(tasks, frame: pd.DataFrame, items: pd.DataFrame, experiments) -> list[str]:
    """The ``tasks`` at which no dense run of ``experiments`` is above chance
    (:func:`above_chance`): reported apart, never evidence for a claim."""
    dense = select(frame, experiments)
    dense = dense[(dense["method"] == DENSE) & (dense["metric"] == "acc")]
    apart = []
    for task in dict.fromkeys(tasks):
        hashes = dense[dense["dataset"] == task]["config_hash"]
        if not any(above_chance(items, h, task)[0] for h in hashes):
            apart.append(task)
    return apart


def downstream_claim(
    comparisons: pd.DataFrame, frame: pd.DataFrame, items: pd.DataFrame, experiments
) -> str:
    """The downstream claim over the tasks the dense model answers above chance."""
    rows = comparisons[(comparisons["metric"] == "acc") & (comparisons["rival"] != DENSE)]
    if rows.empty:
        return f"Downstream ({CLAIMS['downstream']}): no paired accuracy comparisons here."
    apart = at_chance(rows["dataset"], frame, items, experiments)
    used = rows[~rows["dataset"].isin(apart) & rows["p"].notna()]
    names = ", ".join(DATASET_NAMES.get(t, t) for t in apart)
    tail = f" Reported apart (dense not above chance): {names}." if apart else ""
    if used.empty:
        return f"Downstream ({CLAIMS['downstream']}): no task above chance to judge it.{tail}"

    def loss(row) -> str:
        return (
            f"{_name(row['rival'])} is higher on {DATASET_NAMES.get(row['dataset'])} "
            f"({100 * -row['estimate']:.1f} points, Holm-adjusted)"
        )

    text = _sentence(
        f"Downstream ({CLAIMS['downstream']})",
        used,
        1,
        "baseline x task",
        loss,
        lambda d: f"differences up to {100 * d:.1f} points (80% power)",
    )
    return text + tail + _missing(used)


def time_claim(frame: pd.DataFrame, experiments, reference: str = "twossp") -> str:
    """The pruning-time claim: each baseline's time over 2SSP's, tested over calibration
    draws where both ran at least three (a paired t test of the log ratio), else untested."""
    runs = with_sparsity(select(frame, experiments)).drop_duplicates("config_hash")
    runs = runs[runs["method"] != DENSE]
    runs = runs[~replayed(runs)]  # a replayed plan's seconds are its source run's
    ref = runs[runs["method"] == reference]
    head = f"Pruning time ({CLAIMS['pruning_time']})"
    key = ["model", "protocol", "sparsity", "calib_seed"]
    found = []  # (method, ratio, low, high, p, draws)
    for method in dict.fromkeys(runs["method"]):
        if method == reference:
            continue
        both = ref.merge(runs[runs["method"] == method], on=key, suffixes=("_ref", "_riv"))
        if both.empty:
            continue
        cell = ["model", "protocol", "sparsity"]
        sizes = both.groupby(cell)["calib_seed"].transform("size")
        if sizes.max() >= 3:  # several calibration draws of one configuration: a paired test
            drawn = both[sizes == sizes.max()]
            drawn = drawn[(drawn[cell] == drawn[cell].iloc[0]).all(axis=1)]
            riv = drawn["prune_seconds_riv"].astype(float)
            r = paired.draws_ratio(riv, drawn["prune_seconds_ref"].astype(float))
            found.append((method, r.estimate, r.low, r.high, r.p, len(drawn)))
        else:  # one run per configuration: the geometric mean ratio, untested
            ratio = both["prune_seconds_riv"].astype(float) / both["prune_seconds_ref"].astype(
                float
            )
            found.append((method, float(np.exp(np.log(ratio).mean())), *[math.nan] * 3, 1))
    if not found:
        return f"{head}: no baseline timed beside 2SSP here (replayed plans are not timed)."
    parts = []
    for method, ratio, low, high, p, draws in found:
        if draws > 1:
            parts.append(
                f"{_name(method)} {ratio:.1f}x [{low:.1f}, {high:.1f}] ({p_text(p)}, {draws} draws)"
            )
        else:
            parts.append(f"{_name(method)} {ratio:.1f}x (one run each)")
    top = max(found, key=lambda f: f[1])
    if top[5] == 1:
        verdict = "untested (one run per method)"
    elif top[2] >= 100:
        verdict = "holds"
    elif top[3] < 100:
        verdict = "does not hold at this size"
    else:
        verdict = "cannot be told apart at this size"
    return (
        f"{head}: **{verdict}**. Baseline time / 2SSP time: {'; '.join(parts)}. The largest "
        f"gain here is {_name(top[0])}'s {top[1]:.1f}x (the paper: up to about 100x, 7B models "
        "on GPUs); wall-clock seconds in method.prune on this machine."
    )


def claim_sentences(
    comparisons: pd.DataFrame, frame: pd.DataFrame, items: pd.DataFrame, experiments
) -> list[str]:
    """One sentence per claim of the paper that the experiment's rows can speak to."""
    out = []
    if (comparisons["metric"] == "ppl").any():
        out.append(perplexity_claim(comparisons))
    if (comparisons["metric"] == "acc").any():
        out.append(downstream_claim(comparisons, frame, items, experiments))
    out.append(time_claim(frame, experiments))
    return out
