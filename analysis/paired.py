"""Paired comparisons of two runs scored on the same units, and the verdicts drawn from them.

Every method of a table is scored on the same evaluation windows and the same documents, and
how hard a window or a document is, is shared by all of them. Comparing two methods through
their marginal intervals throws that away (and "the intervals do not overlap" is a test at
about p = 0.005, not 0.05); comparing the per-unit differences keeps it. The functions here
are pure (numbers in, numbers out; numpy and the standard library only) and each is checked
against scipy or a hand-computed answer in ``tests/test_paired.py``.

Perplexity (:func:`perplexity_ratio`). For windows of equal length, a run's perplexity is
``exp`` of its mean window NLL, so with ``d_i = nll_a_i - nll_b_i`` on the shared windows
the ratio of the two perplexities is ``exp(mean d)``. The interval is the paired Student t
interval on ``mean d`` mapped through ``exp`` (the same interval as each row's own, now on
the differences: exact for normal differences, deterministic, recomputable by hand). The p
value is a two-sided sign-flip permutation test of ``mean d = 0``: under the null each
difference is as likely to have either sign, so ``|sum d|`` is compared with its value under
all ``2^n`` sign patterns (exact up to :data:`EXACT_MAX` windows), or under
:data:`FLIPS` seeded random patterns with the ``(b + 1) / (m + 1)`` correction, which keeps
a Monte Carlo p valid. No normality is assumed for p, which matters with 8 windows.

Calibration draws (:func:`draws_ratio`): the same test with a draw in place of a window:
``d_k = log ppl_a_k - log ppl_b_k`` for two methods pruned with the same calibration draw
``k``. ``exp(mean d)`` is the ratio of the methods' geometric-mean perplexities. With ``n``
draws the smallest attainable two-sided sign-flip p is ``2 / 2^n`` (0.0625 for 5 draws).

Accuracy (:func:`accuracy_difference`): 0/1 outcomes of two runs on the same documents. The
difference in accuracy with a paired percentile bootstrap interval (documents resampled with
replacement, both runs' outcomes together; whole clusters resampled when the documents come
in clusters, such as WinoGrande's twin sentences or MMLU's subjects; seeded), and McNemar's
exact p: only discordant documents (one run right, the other wrong) carry information, and
under the null each is equally likely either way, so ``p`` is the two-sided binomial test of
the discordant count at 1/2. McNemar assumes independent documents; with clusters the
reported p is the larger of McNemar's and a cluster-robust Wald test's (:func:`paired_se`,
the CR1 sandwich standard error of the mean difference).

Power (:func:`detectable_t`, :func:`detectable_normal`, :func:`detectable_accuracy`). The
smallest true difference the design detects with probability :data:`POWER` at two-sided
level :data:`ALPHA`: ``(q_{1-alpha/2} + q_{power}) * SE``, with Student t quantiles on
``n - 1`` degrees of freedom for the paired t design (reported as a perplexity ratio
``exp(...)``) and normal quantiles for accuracy, whose SE is the null one from the
observed discordance, ``sqrt(discordant / n) / sqrt(n)`` (summed over clusters when
clustered). A tie is printed with this number: "could not be told apart" means little
unless it says what could have been.

Verdicts. :func:`best_of` is the intersection-union rule: the method with the best value in
a column is *best* only when it beats every rival by a paired test at ``alpha`` in the right
direction. Claiming "best" means claiming every one of those comparisons, so each is tested
at ``alpha`` and no correction is needed for that one claim (its p is the largest of the
comparisons' p values, :attr:`Verdict.p`). Counting such claims over many columns ("best in
k of n") is a family of claims: :func:`count_best` applies Holm's step-down adjustment
(:func:`holm`) to the columns' p values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from twossp.evaluation.perplexity import t_quantile

ALPHA = 0.05  # two-sided level of every test
POWER = 0.8  # power at which a detectable difference is reported
CONFIDENCE = 0.95
EXACT_MAX = 20  # sign-flip p by full enumeration (2^20 patterns) up to this many units
FLIPS = 9999  # random sign patterns beyond EXACT_MAX
RESAMPLES = 9999  # bootstrap resamples
SEED = 0
_CHUNK = 2_000_000  # numbers per block of random draws (memory bound)
RATIO, DIFFERENCE = "ratio", "difference"


def z_quantile(p: float) -> float:
    """The ``p`` quantile of the standard normal."""
    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class Paired:
    """One paired comparison of run ``a`` with run ``b`` on their shared units.

    Attributes:
        scale: :data:`RATIO` (perplexity: ``a / b``) or :data:`DIFFERENCE` (accuracy:
            ``a - b`` as a fraction).
        estimate: the ratio or the difference.
        low, high: its 95% interval (NaN with fewer than two units).
        p: two-sided p value of "no difference".
        n: units paired.
        detectable: the smallest ratio (>= 1) or absolute difference the design detects at
            80% power, two-sided 0.05 (NaN when the units show no spread to estimate it).
        test: the test that gave ``p``, in words.
        se: standard error of the log ratio or of the difference.
        clusters: clusters the units came in (None: independent units).
    """

    scale: str
    estimate: float
    low: float
    high: float
    p: float
    n: int
    detectable: float
    test: str
    se: float = math.nan
    clusters: int | None = None

    @property
    def effect(self) -> float:
        """The comparison on an additive scale where 0 is no difference (log ratio or
        difference)."""
        return math.log(self.estimate) if self.scale == RATIO else self.estimate

    @property
    def direction(self) -> int:
        """-1 when ``a`` is lower than ``b``, +1 when higher, 0 when equal."""
        return int(np.sign(self.effect))


# --- building blocks ---------------------------------------------------------------------------


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        shapes = f"{a.shape} and {b.shape}"
        raise ValueError(f"paired outcomes need two 1-D arrays of one length, got {shapes}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired outcomes must be finite (drop the units a run did not score)")
    return a, b


def t_interval(d, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student t interval of the mean of ``d`` (NaN bounds with
    fewer than two values)."""
    d = np.asarray(d, dtype=float)
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile((1 + confidence) / 2, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def sign_flip_p(d, *, exact_max: int = EXACT_MAX, flips: int = FLIPS, seed: int = SEED) -> float:
    """Two-sided sign-flip permutation p of ``mean d = 0`` (paired differences ``d``).

    The statistic is ``|sum d|``; p is the share of sign patterns whose statistic reaches the
    observed one. Up to ``exact_max`` values every one of the ``2^n`` patterns is counted
    (the observed pattern among them); beyond, ``flips`` seeded random patterns give
    ``(b + 1) / (flips + 1)``, ``b`` counting those that reach it.

    Args:
        d: paired differences.
        exact_max: largest ``n`` enumerated exactly.
        flips: random sign patterns beyond ``exact_max``.
        seed: seed of the random patterns.
    """
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        raise ValueError("sign_flip_p needs at least one difference")
    observed = abs(float(d.sum()))
    reach = observed - 1e-9 * float(np.abs(d).sum())  # equal sums up to rounding count
    if d.size <= exact_max:
        sums = np.zeros(1)
        for x in d:
            sums = np.concatenate((sums + x, sums - x))
        return float(np.count_nonzero(np.abs(sums) >= reach)) / sums.size
    rng = np.random.default_rng(seed)
    hits, left = 0, flips
    while left:
        k = min(left, max(1, _CHUNK // d.size))
        signs = rng.integers(0, 2, size=(k, d.size), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= reach))
        left -= k
    return (hits + 1) / (flips + 1)


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p of ``k`` successes in ``n`` trials at probability 1/2
    (symmetric: twice the smaller tail, at most 1)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    low = min(k, n - k)
    if 2 * low == n:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar_p(a, b) -> float:
    """McNemar's exact two-sided p for paired 0/1 outcomes ``a`` and ``b``: the binomial
    test at 1/2 of the documents ``a`` got right and ``b`` wrong among the discordant ones."""
    a, b = _pairs(a, b)
    a_only = int(np.count_nonzero((a == 1) & (b == 0)))
    b_only = int(np.count_nonzero((a == 0) & (b == 1)))
    return binomial_two_sided(a_only, a_only + b_only)


def _cluster_codes(clusters, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    values = list(clusters)
    if len(values) != n:
        raise ValueError(f"{len(values)} cluster labels for {n} units")
    codes: dict = {}
    return np.array([codes.setdefault(v, len(codes)) for v in values])


def paired_se(a, b, clusters=None) -> float:
    """Standard error of the paired difference ``mean(a) - mean(b)``.

    Without clusters: ``sd(d) / sqrt(n)`` (``ddof=1``). With clusters: the CR1
    cluster-robust (sandwich) error ``sqrt(C / (C - 1) * sum_c r_c^2) / n``, ``r_c`` the sum
    over cluster ``c`` of ``d_i - mean d``; with one unit per cluster it equals the plain
    one. NaN with fewer than two units or clusters.
    """
    a, b = _pairs(a, b)
    d = a - b
    codes = _cluster_codes(clusters, d.size)
    c = int(codes.max()) + 1 if d.size else 0
    if d.size < 2 or c < 2:
        return math.nan
    resid = np.bincount(codes, weights=d - d.mean())
    return math.sqrt(c / (c - 1) * float(np.sum(resid**2))) / d.size


def null_se(a, b, clusters=None) -> float:
    """Standard error of the mean paired difference under "no difference", from the
    observed discordance: ``sqrt(sum_c D_c^2) / n`` with ``D_c`` the summed differences of
    cluster ``c``; without clusters ``sqrt(discordant share / n)``."""
    a, b = _pairs(a, b)
    d = a - b
    if d.size == 0:
        return math.nan
    sums = np.bincount(_cluster_codes(clusters, d.size), weights=d)
    return math.sqrt(float(np.sum(sums**2))) / d.size


def paired_bootstrap(
    a,
    b,
    clusters=None,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` for paired outcomes.

    Each resample draws units (or, with ``clusters``, whole clusters) with replacement and
    keeps both runs' outcomes of a drawn unit together; the statistic is the difference of
    the resample's means (summed differences over summed cluster sizes).
    """
    a, b = _pairs(a, b)
    d = a - b
    if d.size < 2:
        return math.nan, math.nan
    codes = _cluster_codes(clusters, d.size)
    sums = np.bincount(codes, weights=d)
    sizes = np.bincount(codes).astype(float)
    rng = np.random.default_rng(seed)
    stats, left = [], resamples
    while left:
        k = min(left, max(1, _CHUNK // sums.size))
        pick = rng.integers(0, sums.size, size=(k, sums.size))
        stats.append(sums[pick].sum(axis=1) / sizes[pick].sum(axis=1))
        left -= k
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(stats), [tail, 1 - tail])
    return float(low), float(high)


# --- power ---------------------------------------------------------------------------------


def detectable_t(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean difference a paired t test on ``n`` units detects with ``power`` at
    two-sided ``alpha``: ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (NaN for
    ``n < 2`` or no spread)."""
    if n < 2 or not sd > 0:
        return math.nan
    q = t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)
    return q * sd / math.sqrt(n)


def detectable_normal(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest difference a two-sided normal test at ``alpha`` detects with ``power``
    given its standard error: ``(z_{1-alpha/2} + z_{power}) * se`` (NaN when ``se`` is not
    positive)."""
    if not se > 0:
        return math.nan
    return (z_quantile(1 - alpha / 2) + z_quantile(power)) * se


def detectable_accuracy(
    n: int,
    discordance: float,
    design_effect: float = 1.0,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """A priori: the accuracy difference (fraction) ``n`` paired documents detect.

    Args:
        n: documents scored by both runs.
        discordance: share of documents on which the two runs disagree (one right, the
            other wrong), e.g. observed on another task or a pilot.
        design_effect: variance inflation from clustered documents (1: independent).
        alpha: two-sided level.
        power: probability of detecting the difference.
    """
    if n < 1 or not 0 <= discordance <= 1:
        raise ValueError(f"need n >= 1 and 0 <= discordance <= 1, got n={n}, {discordance}")
    return detectable_normal(math.sqrt(discordance * design_effect / n), alpha, power)


def normal_p(estimate: float, se: float) -> float:
    """Two-sided normal (Wald) p of ``estimate / se``."""
    if not se > 0:
        return 1.0 if estimate == 0 else math.nan
    return 2 * (1 - NormalDist().cdf(abs(estimate) / se))


# --- the comparisons ------------------------------------------------------------------------


def log_ratio(
    d, *, confidence: float = CONFIDENCE, seed: int = SEED, unit: str = "window"
) -> Paired:
    """The ratio ``exp(mean d)`` of per-unit log differences ``d``, its paired t interval,
    sign-flip p and detectable ratio (the common core of :func:`perplexity_ratio` and
    :func:`draws_ratio`)."""
    d = np.asarray(d, dtype=float)
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError("log_ratio needs at least one finite difference")
    mean, low, high = t_interval(d, confidence)
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    exact = d.size <= EXACT_MAX
    test = f"sign-flip permutation over {unit}s" + ("" if exact else f" ({FLIPS} seeded flips)")
    return Paired(
        RATIO,
        math.exp(mean),
        math.exp(low),
        math.exp(high),
        sign_flip_p(d, seed=seed),
        int(d.size),
        math.exp(detectable_t(sd, d.size)),
        test,
        se=sd / math.sqrt(d.size),
    )


def perplexity_ratio(nll_a, nll_b, *, confidence: float = CONFIDENCE, seed: int = SEED) -> Paired:
    """Perplexity of run ``a`` over run ``b`` from their mean NLLs on the same windows (in
    the same order; windows of equal length). See the module docstring."""
    a, b = _pairs(nll_a, nll_b)
    return log_ratio(a - b, confidence=confidence, seed=seed)


def draws_ratio(ppl_a, ppl_b, *, confidence: float = CONFIDENCE, seed: int = SEED) -> Paired:
    """Ratio of two methods' geometric-mean perplexities over calibration draws, paired by
    draw (``ppl_a[k]`` and ``ppl_b[k]`` pruned with the same draw ``k``)."""
    a, b = _pairs(ppl_a, ppl_b)
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("perplexities must be positive")
    return log_ratio(np.log(a) - np.log(b), confidence=confidence, seed=seed, unit="draw")


def accuracy_difference(
    a,
    b,
    clusters=None,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Paired:
    """Accuracy of run ``a`` minus run ``b`` (fractions) on the same documents.

    Args:
        a, b: 0/1 outcomes per document, in the same order.
        clusters: a label per document where documents come in clusters (None:
            independent); the interval resamples whole clusters, the detectable difference
            and the Wald p are cluster-robust.
        confidence: coverage of the bootstrap interval.
        resamples: bootstrap resamples.
        seed: bootstrap seed.
    """
    a, b = _pairs(a, b)
    if not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ValueError("accuracy outcomes must be 0 or 1")
    if a.size == 0:
        raise ValueError("accuracy_difference needs at least one document")
    low, high = paired_bootstrap(
        a, b, clusters, confidence=confidence, resamples=resamples, seed=seed
    )
    estimate = float(a.mean() - b.mean())
    p, se = mcnemar_p(a, b), paired_se(a, b, clusters)
    test = "McNemar exact"
    n_clusters = None
    if clusters is not None:
        n_clusters = int(_cluster_codes(clusters, a.size).max()) + 1
        p = max(p, normal_p(estimate, se)) if not math.isnan(se) else p
        test = f"McNemar exact and cluster-robust Wald over {n_clusters} clusters (larger p)"
    detectable = detectable_normal(null_se(a, b, clusters))
    return Paired(DIFFERENCE, estimate, low, high, p, int(a.size), detectable, test, se, n_clusters)


def combine_differences(parts: Sequence[Paired], confidence: float = CONFIDENCE) -> Paired:
    """The mean of accuracy differences measured on separate document sets (a table's
    average over tasks): ``mean`` of the estimates, standard error ``sqrt(sum se^2) / k``
    (the tasks' documents are independent), normal interval and Wald p; the detectable
    difference combines the parts' the same way."""
    if not parts or any(p.scale != DIFFERENCE for p in parts):
        raise ValueError("combine_differences needs accuracy differences")
    k = len(parts)
    estimate = sum(p.estimate for p in parts) / k
    se = math.sqrt(sum(p.se**2 for p in parts)) / k
    z = z_quantile((1 + confidence) / 2)
    q = z_quantile(1 - ALPHA / 2) + z_quantile(POWER)
    null = math.sqrt(sum((p.detectable / q) ** 2 for p in parts)) / k
    return Paired(
        DIFFERENCE,
        estimate,
        estimate - z * se,
        estimate + z * se,
        normal_p(estimate, se),
        sum(p.n for p in parts),
        detectable_normal(null),
        f"Wald on the mean of {k} tasks' paired differences",
        se,
    )


# --- verdicts -------------------------------------------------------------------------------


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p values (same order; NaN entries stay NaN and do not
    count toward the family size)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * q[order]), 1.0)
    result = np.empty(m)
    result[order] = adjusted
    out[ok] = result
    return out


@dataclass(frozen=True)
class Verdict:
    """The intersection-union verdict of one column (see :func:`best_of`).

    Attributes:
        leader: the candidate with the best value (None: fewer than two candidates).
        best: ``leader`` when it beat every rival, else None.
        tied: when not best, the leader and the rivals it was not told apart from.
        detectable: per tied method, the detectable difference of its comparison with the
            leader (the leader's: against its closest tied rival).
        comparisons: the leader against each rival.
        missing: rivals that could not be compared (no shared units): no verdict then.
        p: the claim "leader is best": the largest p of the comparisons when each points
            the leader's way, else 1 (NaN without a verdict).
    """

    leader: str | None = None
    best: str | None = None
    tied: tuple[str, ...] = ()
    detectable: dict[str, float] = field(default_factory=dict)
    comparisons: dict[str, Paired] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    p: float = math.nan

    @property
    def decided(self) -> bool:
        """Whether the column has a verdict (best or tie)."""
        return self.leader is not None and not self.missing


def best_of(
    values: Mapping[str, float],
    compare: Callable[[str, str], Paired | None],
    lower_is_better: bool,
    alpha: float = ALPHA,
) -> Verdict:
    """The intersection-union rule for one column.

    Args:
        values: each candidate's value (the dense model left out by the caller); NaN
            values do not compete.
        compare: ``compare(leader, rival)``, the paired comparison of the two (ratio or
            difference of ``leader`` to ``rival``), or None when they share no units.
        lower_is_better: perplexity (True) or accuracy (False).
        alpha: level of each paired test.

    Returns:
        No verdict with fewer than two candidates or a rival that cannot be compared; else
        ``best`` when the leader beats every rival (``p < alpha`` in its direction),
        otherwise ``tied``.
    """
    finite = {m: float(v) for m, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:
        return Verdict()
    pick = min if lower_is_better else max
    leader = pick(finite, key=finite.get)
    want = -1 if lower_is_better else 1
    rivals = [m for m in finite if m != leader]
    comparisons = {r: compare(leader, r) for r in rivals}
    missing = tuple(r for r, c in comparisons.items() if c is None)
    if missing:
        return Verdict(leader=leader, missing=missing)
    beaten = {r: c.p < alpha and c.direction == want for r, c in comparisons.items()}
    p = max(c.p if c.direction == want else 1.0 for c in comparisons.values())
    if all(beaten.values()):
        return Verdict(leader, leader, comparisons=comparisons, p=p)
    close = [r for r in rivals if not beaten[r]]
    detectable = {r: comparisons[r].detectable for r in close}
    nearest = min(close, key=lambda r: abs(finite[r] - finite[leader]))
    detectable[leader] = comparisons[nearest].detectable
    return Verdict(leader, None, (leader, *close), detectable, comparisons, p=p)


def count_best(verdicts: Sequence[Verdict], method: str, alpha: float = ALPHA) -> tuple[int, int]:
    """``(k, n)``: in how many of the ``n`` decided columns ``method`` is best after Holm's
    adjustment of the columns' intersection-union p values (a column led by another method
    counts as p = 1)."""
    decided = [v for v in verdicts if v.decided]
    ps = [v.p if v.leader == method else 1.0 for v in decided]
    adjusted = holm(ps)
    return int(np.count_nonzero(adjusted < alpha)), len(decided)
