"""analysis.paired: every paired test against scipy or a hand-computed answer (the paired t
interval, the sign-flip permutation p, McNemar, the bootstrap, cluster-robust errors, the
detectable-difference formulas, Holm and the intersection-union rule); the verdict sentences;
and analysis.verdicts: which units two runs share (items built from the per-item contract of
twossp.items) and the marks drawn from them."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import comparison, paired, verdicts


def _nll(seed: int, n: int, shift: float = 0.0, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    base = rng.normal(3.0, 0.4, n)  # window difficulty, shared by both runs
    return base + shift + rng.normal(0, noise, n), base + rng.normal(0, noise, n)


# --- perplexity ------------------------------------------------------------------------------


def test_perplexity_ratio_is_the_ratio_of_perplexities_with_the_paired_t_interval():
    a, b = _nll(0, 8, shift=0.03)
    r = paired.perplexity_ratio(a, b)
    assert r.estimate == pytest.approx(math.exp(a.mean()) / math.exp(b.mean()))
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (math.log(r.low), math.log(r.high)) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert r.n == 8 and r.se == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(8))
    assert r.direction == np.sign(np.mean(a - b)) and r.scale == paired.RATIO


@pytest.mark.parametrize("n", [6, 10, 16])
def test_sign_flip_p_equals_scipys_exact_permutation_test(n):
    a, b = _nll(n, n, shift=0.02)
    ours = paired.sign_flip_p(a - b)
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,  # every sign pattern
        alternative="two-sided",
    )
    assert ours == pytest.approx(ref.pvalue, rel=1e-12)
    assert paired.perplexity_ratio(a, b).p == ours


def test_sign_flip_p_known_answers():
    assert paired.sign_flip_p(np.zeros(7)) == 1.0
    # all five differences alike: only the observed pattern and its mirror reach it
    assert paired.sign_flip_p([0.1] * 5) == pytest.approx(2 / 32)
    # [1, 2, 3]: |±1 ±2 ±3| reaches 6 for +++ and --- only
    assert paired.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    # [1, -1, 2], observed |2|: the eight sums are ±2, ±4, ±2, 0, 0 -> six reach 2
    assert paired.sign_flip_p([1.0, -1.0, 2.0]) == pytest.approx(6 / 8)


def test_monte_carlo_sign_flip_is_seeded_corrected_and_close_to_scipy():
    a, b = _nll(3, 40, shift=0.01, noise=0.05)
    d = a - b
    p = paired.sign_flip_p(d)
    assert p == paired.sign_flip_p(d)  # seeded: the same p every time
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=99_999,
        random_state=1,
    ).pvalue
    assert abs(p - ref) < 0.02
    # no random pattern reaches a sum of forty positive differences: p = (0 + 1) / (m + 1)
    assert paired.sign_flip_p(np.full(40, 0.1)) == pytest.approx(1 / (paired.FLIPS + 1))
    assert paired.sign_flip_p(np.full(40, 0.1), flips=99) == pytest.approx(1 / 100)


def test_draws_ratio_is_the_ratio_of_geometric_means():
    a, b = [10.0, 12.0, 20.0], [15.0, 16.0, 14.0]
    r = paired.draws_ratio(a, b)
    gm = stats.gmean(a) / stats.gmean(b)
    assert r.estimate == pytest.approx(gm)
    assert r.p == pytest.approx(paired.sign_flip_p(np.log(a) - np.log(b)))
    assert "draw" in r.test
    # five draws can never reach p < 0.05 by the sign-flip test: 2 / 2^5
    assert paired.draws_ratio([1.0] * 5, [2.0] * 5).p == pytest.approx(0.0625)
    with pytest.raises(ValueError, match="positive"):
        paired.draws_ratio([0.0, 1.0], [1.0, 1.0])


# --- accuracy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 0), (3, 3), (9, 2), (1, 12), (40, 25)])
def test_mcnemar_is_the_binomial_test_of_the_discordant_documents(a_only, b_only):
    both, neither = 30, 20
    a = np.array([1] * a_only + [0] * b_only + [1] * both + [0] * neither)
    b = np.array([0] * a_only + [1] * b_only + [1] * both + [0] * neither)
    ours = paired.mcnemar_p(a, b)
    if a_only + b_only == 0:
        assert ours == 1.0
    else:
        assert ours == pytest.approx(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)


def test_accuracy_difference_interval_matches_scipys_paired_bootstrap():
    rng = np.random.default_rng(5)
    easy = rng.random(300) < 0.6  # shared document difficulty
    a = (easy | (rng.random(300) < 0.15)).astype(float)
    b = (easy & (rng.random(300) < 0.9)).astype(float)
    r = paired.accuracy_difference(a, b)
    assert r.estimate == pytest.approx(a.mean() - b.mean())
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=9999,
        random_state=2,
    ).confidence_interval
    assert r.low == pytest.approx(ref.low, abs=0.01) and r.high == pytest.approx(ref.high, abs=0.01)
    assert r.p == pytest.approx(paired.mcnemar_p(a, b)) and r.test == "McNemar exact"
    assert paired.accuracy_difference(a, b) == r  # seeded


def test_clusters_of_identical_copies_count_once():
    # every document twice (a twin in the same cluster, same outcomes): resampling clusters
    # of the doubled set is resampling documents of the original one, so the interval, the
    # cluster-robust error and the detectable difference equal the original's exactly.
    rng = np.random.default_rng(7)
    a, b = (rng.random(80) < 0.6).astype(float), (rng.random(80) < 0.5).astype(float)
    plain = paired.accuracy_difference(a, b)
    twins = paired.accuracy_difference(np.repeat(a, 2), np.repeat(b, 2), np.repeat(range(80), 2))
    assert (twins.low, twins.high) == pytest.approx((plain.low, plain.high), abs=1e-12)
    assert twins.se == pytest.approx(plain.se) and twins.clusters == 80
    assert twins.detectable == pytest.approx(plain.detectable)
    # treating the copies as independent would shrink the error by sqrt(2)
    naive = paired.paired_se(np.repeat(a, 2), np.repeat(b, 2))
    assert naive == pytest.approx(plain.se / math.sqrt(2), rel=0.01)


def test_cluster_robust_error_known_answer():
    a = np.array([1, 1, 0, 1, 0, 0])
    b = np.array([0, 0, 0, 1, 1, 0])
    d = a - b  # [1, 1, 0, 0, -1, 0], mean 1/6
    # singletons: the plain standard error
    assert paired.paired_se(a, b, range(6)) == pytest.approx(np.std(d, ddof=1) / math.sqrt(6))
    # clusters {0,1}, {2,3}, {4,5}: residual sums 2 - 2/6, 0 - 2/6, -1 - 2/6
    r = np.array([2 - 1 / 3, -1 / 3, -1 - 1 / 3])
    expected = math.sqrt(3 / 2 * np.sum(r**2)) / 6
    assert paired.paired_se(a, b, ["x", "x", "y", "y", "z", "z"]) == pytest.approx(expected)
    assert paired.null_se(a, b, ["x", "x", "y", "y", "z", "z"]) == pytest.approx(
        math.sqrt(4 + 0 + 1) / 6
    )
    assert paired.null_se(a, b) == pytest.approx(math.sqrt(3 / 6 / 6))  # discordance 3/6


def test_clustered_p_is_the_larger_of_mcnemar_and_the_cluster_robust_wald():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    clusters = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]  # the six discordant documents: one cluster
    r = paired.accuracy_difference(a, b, clusters)
    se = paired.paired_se(a, b, clusters)
    wald = 2 * (1 - NormalDist().cdf(0.6 / se))
    assert r.p == pytest.approx(max(paired.mcnemar_p(a, b), wald)) and r.clusters == 3


def test_task_mean_combines_independent_differences():
    parts = [
        paired.Paired(paired.DIFFERENCE, 0.04, 0, 0, 0.5, 100, 0.12, "x", se=0.03),
        paired.Paired(paired.DIFFERENCE, 0.10, 0, 0, 0.01, 100, 0.16, "x", se=0.04),
    ]
    mean = paired.combine_differences(parts)
    assert mean.estimate == pytest.approx(0.07) and mean.se == pytest.approx(0.025)
    half = 1.959964 * 0.025
    assert (mean.low, mean.high) == pytest.approx((0.07 - half, 0.07 + half))
    assert mean.p == pytest.approx(2 * (1 - NormalDist().cdf(0.07 / 0.025)))
    assert mean.detectable == pytest.approx(0.1) and mean.n == 200  # sqrt(.12² + .16²) / 2


# --- power -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 8, 30])
def test_detectable_difference_of_the_paired_t_design(n):
    sd = 0.2
    got = paired.detectable_t(sd, n)
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert got == pytest.approx(expected, rel=1e-9)
    # the formula is the usual approximation: the exact (noncentral t) power at that
    # difference is close to 80%
    crit = stats.t.ppf(0.975, n - 1)
    power = stats.nct.sf(crit, n - 1, got / (sd / math.sqrt(n)))
    assert 0.75 < power < 0.82
    assert math.isnan(paired.detectable_t(0.0, n)) and math.isnan(paired.detectable_t(sd, 1))


def test_perplexity_detectable_ratio_is_exp_of_the_t_design_difference():
    a, b = _nll(11, 8)
    r = paired.perplexity_ratio(a, b)
    assert r.detectable == pytest.approx(math.exp(paired.detectable_t(np.std(a - b, ddof=1), 8)))


def test_detectable_accuracy_at_100_documents():
    # discordance 0.3: se = sqrt(0.3 / 100); (1.96 + 0.84) * se = 15.3 points
    got = paired.detectable_accuracy(100, 0.3)
    assert got == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(0.003))
    assert got == pytest.approx(0.1535, abs=1e-4)
    # so a real 5-point gap is detected about 15% of the time (the figure)
    se = math.sqrt(0.003)
    power = NormalDist().cdf(0.05 / se - 1.959964) + NormalDist().cdf(-0.05 / se - 1.959964)
    assert power == pytest.approx(0.15, abs=0.01)
    clustered = paired.detectable_accuracy(100, 0.3, design_effect=2)
    assert clustered == pytest.approx(got * math.sqrt(2))
    # the observed version uses the same formula
    a = np.array([1] * 18 + [0] * 12 + [1] * 40 + [0] * 30)
    b = np.array([0] * 18 + [1] * 12 + [1] * 40 + [0] * 30)
    assert paired.accuracy_difference(a, b).detectable == pytest.approx(got)
    with pytest.raises(ValueError, match="discordance"):
        paired.detectable_accuracy(100, 1.5)


# --- Holm and the intersection-union rule ------------------------------------------------------


def test_holm_known_answer():
    adjusted = paired.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_nan = paired.holm([0.02, np.nan, 0.5])
    assert with_nan[0] == pytest.approx(0.04) and np.isnan(with_nan[1]) and with_nan[2] == 0.5
    assert paired.holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # 2 x 0.8, capped at 1
    assert paired.holm([0.3, 0.02]).tolist() == pytest.approx([0.3, 0.04])


def _ratio(estimate, p, detectable=1.2):
    return paired.Paired(paired.RATIO, estimate, 0.0, 0.0, p, 8, detectable, "t")


def test_best_needs_a_paired_win_over_every_rival():
    values = {"twossp": 10.0, "shortgpt": 12.0, "window": 10.5}
    table = {
        ("twossp", "shortgpt"): _ratio(0.83, 0.004, 1.1),
        ("twossp", "window"): _ratio(0.95, 0.01, 1.04),
    }
    verdict = paired.best_of(values, lambda a, b: table[(a, b)], lower_is_better=True)
    assert verdict.best == "twossp" and verdict.tied == () and verdict.p == 0.01
    # window not beaten: twossp and window tie, shortgpt (beaten) is not marked
    table[("twossp", "window")] = _ratio(0.95, 0.2, 1.08)
    verdict = paired.best_of(values, lambda a, b: table[(a, b)], lower_is_better=True)
    assert verdict.best is None and verdict.tied == ("twossp", "window")
    assert verdict.detectable == {"window": 1.08, "twossp": 1.08} and verdict.p == 0.2


def test_best_of_leaves_one_candidate_or_a_missing_comparison_without_verdict():
    # the reported bug: a table bolded the only pruned method as "best"
    alone = paired.best_of({"twossp": 10.0}, lambda a, b: None, True)
    assert alone.best is None and not alone.decided
    missing = paired.best_of({"a": 1.0, "b": 2.0}, lambda a, b: None, True)
    assert missing.missing == ("b",) and missing.best is None and not missing.decided


def test_best_of_accuracy_direction_and_a_disagreeing_pair():
    diff = paired.Paired(paired.DIFFERENCE, 0.06, 0, 0, 0.01, 100, 0.15, "m")
    verdict = paired.best_of({"a": 0.61, "b": 0.55}, lambda x, y: diff, lower_is_better=False)
    assert verdict.best == "a"
    # the paired units say the leader is worse (e.g. pairing a subset): never a win, p = 1
    worse = paired.Paired(paired.DIFFERENCE, -0.02, 0, 0, 0.01, 90, 0.15, "m")
    verdict = paired.best_of({"a": 0.61, "b": 0.55}, lambda x, y: worse, lower_is_better=False)
    assert verdict.best is None and verdict.tied == ("a", "b") and verdict.p == 1.0


def test_counted_claims_use_holm():
    wins = [paired.Verdict("x", "x", p=p) for p in (0.01, 0.04, 0.03)]
    # unadjusted, x is best in all three columns; after Holm in one (0.03, 0.06, 0.06)
    assert paired.count_best(wins, "x") == (1, 3)
    assert paired.count_best([*wins, paired.Verdict("y", "y", p=0.001)], "x") == (1, 4)
    assert paired.count_best([paired.Verdict()], "x") == (0, 0)


# --- verdict sentences ---------------------------------------------------------------------------


def test_verdict_sentences_come_from_the_test():
    lower = paired.Paired(paired.RATIO, 0.31, 0.27, 0.35, 0.0004, 8, 1.15, "sign-flip")
    assert comparison.verdict_sentence("twossp", "shortgpt", "ppl", "wikitext2", 0.375, lower) == (
        "2SSP's perplexity is lower than ShortGPT's on WikiText-2 at 37.5% "
        "(ratio 0.31 [0.27, 0.35], p < 0.001, 8 windows)."
    )
    tie = paired.Paired(paired.RATIO, 0.98, 0.91, 1.06, 0.52, 8, 1.15, "sign-flip")
    assert comparison.verdict_sentence("twossp", "dense", "ppl", "c4", 0.5, tie) == (
        "2SSP's and the dense model's perplexities on C4 at 50% cannot be told apart "
        "(ratio 0.98 [0.91, 1.06], p = 0.52, 8 windows); the design could detect a ratio of "
        "1.15 at 80% power."
    )
    worse = paired.Paired(paired.DIFFERENCE, -0.06, -0.1, -0.02, 0.003, 100, 0.083, "m", 0.02, 50)
    assert comparison.verdict_sentence(
        "twossp", "slicegpt", "acc_norm", "winogrande", 0.375, worse
    ) == (
        "2SSP's accuracy (acc_norm) is lower than SliceGPT's on WinoGrande at 37.5% "
        "(difference -6.0 points [-10.0, -2.0], p = 0.003, 100 documents (50 clusters))."
    )
    gap = paired.Paired(paired.DIFFERENCE, 0.02, -0.03, 0.07, 0.45, 100, 0.083, "m")
    assert comparison.verdict_sentence("twossp", "window", "acc", "piqa", 0.375, gap).endswith(
        "cannot be told apart (difference +2.0 points [-3.0, +7.0], p = 0.45, 100 documents); "
        "the design could detect a difference of 8.3 points at 80% power."
    )
    assert comparison.verdict_sentence("twossp", "window", "acc", "piqa", 0.375, None) == (
        "2SSP and the window baseline on PIQA at 37.5% cannot be compared: their runs share "
        "no scored units."
    )


# --- units: what two runs share (items built from the per-item contract) ---------------------


def _windows(chash, units, nll, tokens=127, dataset="wikitext2"):
    return pd.DataFrame(
        {
            "config_hash": chash, "kind": "window", "dataset": dataset, "subtask": None,
            "unit": list(units), "offset": [u * (tokens + 1) for u in units],
            "tokens": tokens, "nll": list(nll), "acc": np.nan, "acc_norm": np.nan,
            "target": None, "loglik": None, "cluster": None,
        }
    )  # fmt: skip


def _docs(chash, task, subtasks, units, acc, acc_norm=None, cluster=None):
    n = len(units)
    return pd.DataFrame(
        {
            "config_hash": chash, "kind": "document", "dataset": task, "subtask": subtasks,
            "unit": list(units), "offset": None, "tokens": None, "nll": np.nan,
            "acc": list(acc), "acc_norm": acc_norm if acc_norm is not None else [np.nan] * n,
            "target": 0, "loglik": [[0.0, -1.0]] * n, "cluster": cluster,
        }
    )  # fmt: skip


def _run(chash, metric="ppl", dataset="wikitext2", variant=None):
    return verdicts.Run(chash, metric, dataset, variant)


def test_windows_pair_on_the_intersection_of_their_keys():
    a_nll = np.linspace(3.0, 3.9, 10)
    b_nll = a_nll[2:] - 0.1
    items = pd.concat(
        [_windows("a", range(10), a_nll), _windows("b", range(2, 12), [*b_nll, 9.0, 9.0])]
    )
    units = verdicts.Units(items)
    result = units.compare(_run("a"), _run("b"))
    assert result.n == 8 and result.estimate == pytest.approx(math.exp(0.1))
    assert result.p == pytest.approx(2 / 2**8)
    # windows cut with another length predict other tokens: nothing to pair
    other = verdicts.Units(pd.concat([_windows("a", range(10), a_nll),
                                      _windows("c", range(10), a_nll, tokens=63)]))  # fmt: skip
    assert other.compare(_run("a"), _run("c")) is None


def test_window_losses_of_the_rows_pair_only_under_equal_settings():
    def variant(nll, **settings):
        return json.dumps({"dataset": "wikitext2", "seqlen": 128, "max_windows": 8,
                           "windows": len(nll), **settings, "window_nll": list(nll)})  # fmt: skip

    a, b = [3.0, 3.2, 3.1, 3.4], [3.1, 3.3, 3.3, 3.5]
    units = verdicts.Units(None)
    result = units.compare(_run("a", variant=variant(a)), _run("b", variant=variant(b)))
    assert result.n == 4 and result.estimate == pytest.approx(math.exp(np.mean(np.subtract(a, b))))
    moved = _run("b", variant=variant(b, max_windows=16))
    assert units.compare(_run("a", variant=variant(a)), moved) is None
    assert units.compare(_run("a", variant=variant(a)), _run("b")) is None  # no losses kept


def test_documents_pair_by_subtask_and_id_with_their_clusters():
    subtasks = ["mmlu_anatomy"] * 4 + ["mmlu_law"] * 4
    ids = [0, 1, 2, 3] * 2
    a = _docs("a", "mmlu", subtasks, ids, [1, 1, 0, 1, 1, 1, 1, 0], cluster=subtasks)
    b = _docs("b", "mmlu", subtasks, ids, [0, 1, 0, 1, 0, 0, 1, 0], cluster=subtasks)
    b_extra = _docs("b", "mmlu", ["mmlu_law"], [9], [1])
    units = verdicts.Units(pd.concat([a, b, b_extra]))
    result = units.compare(_run("a", "acc", "mmlu"), _run("b", "acc", "mmlu"))
    assert result.n == 8 and result.clusters == 2  # the extra document is not paired
    assert result.estimate == pytest.approx(3 / 8)
    assert result.se == pytest.approx(
        paired.paired_se([1, 1, 0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 0, 0, 1, 0], subtasks)
    )
    # acc_norm is null for these documents: nothing to pair
    assert units.compare(_run("a", "acc_norm", "mmlu"), _run("b", "acc_norm", "mmlu")) is None


def test_paired_marks_never_bold_a_lone_method_and_leave_dense_out():
    index = pd.MultiIndex.from_tuples(
        [("m", "p", "dense"), ("m", "p", "twossp"), ("m", "p", "shortgpt"), ("n", "p", "twossp")],
        names=["model", "protocol", "method"],
    )
    values = pd.DataFrame({("wikitext2", "ours"): [5.0, 8.0, 9.0, 7.0]}, index=index)
    base = np.array([3.0, 3.2, 2.9, 3.1, 3.3, 3.0, 2.8, 3.4])
    nll = {"dense": base - 0.5, "twossp": base, "shortgpt": base + 0.1, "n": base}
    items = pd.concat([_windows(h, range(8), v) for h, v in nll.items()])
    cells = {(row, ("wikitext2",)): (_run(row[2] if row[0] == "m" else "n"),) for row in index}
    marks = verdicts.paired_marks(values, cells, verdicts.Units(items), lower_is_better=True)
    assert marks.best.iloc[:, 0].tolist() == [False, True, False, False]  # n: twossp alone
    assert len(marks.verdicts) == 1 and marks.verdicts[0].comparisons["shortgpt"].n == 8
    notes = " ".join(verdicts.marks_notes(marks, "window", "a test", "(≥1.23x): a ratio"))
    assert "Paired on 8 windows per comparison" in notes and "twossp 1 of 1" in notes
    # without units: no verdict, and the caption says why
    bare = verdicts.paired_marks(values, cells, verdicts.Units(None), lower_is_better=True)
    assert not bare.best.any().any() and bare.undecided == 1
    assert "no per-window outcomes" in verdicts.marks_notes(bare, "window", "t", "e")[0]


def test_tied_cells_carry_the_detectable_difference():
    assert verdicts.detectable_text(1.2345, paired.RATIO) == "(≥1.23x)"
    assert verdicts.detectable_text(0.041, paired.DIFFERENCE) == "(≥4.1 pts)"
    assert verdicts.detectable_text(float("nan"), paired.RATIO) == ""
    assert [verdicts.p_text(p) for p in (0.0004, 0.0031, 0.312)] == ["< 0.001", "0.003", "0.31"]
