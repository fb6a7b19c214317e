"""Perplexity the way pruning papers compute it, with a 95% interval from the window losses.

The evaluation split is joined into one token stream, cut into non-overlapping windows of
``seqlen`` tokens (the remainder is dropped) and scored with teacher forcing;
perplexity is ``exp`` of the token-weighted mean NLL over all windows.

Fewer windows (``max_windows``). By default (``sample="spread"``) the ``k`` windows scored are
spread evenly over the whole stream, the middle window of each of ``k`` equal strata
(:func:`window_index`), so a quick evaluation reads every part of the corpus instead of its
first article or two; ``sample="first"`` takes the leading windows (older records). Which
windows were scored is kept (:attr:`PerplexityResult.window_index`), so two runs scored on the
same windows can be compared window by window.

Uncertainty. Each window's mean NLL is kept (:attr:`PerplexityResult.window_nll`). The
interval is a Student-t interval on the mean window NLL, mapped through ``exp``:
``exp(m ± t_{0.975, n-1} · s / sqrt(n))`` with ``m``, ``s`` the mean and sample standard
deviation of the ``n`` window NLLs. Since every window has ``seqlen`` tokens, ``exp(m)`` is
the reported perplexity (up to float rounding: the reported value is summed per batch, as
before). Why this interval and not a percentile bootstrap: quick CPU runs score few windows
(8 on SmolLM2), where a percentile bootstrap is known to be too narrow and its ends are
coarse order statistics, while the t interval is exact for normal window losses at any
``n``, is deterministic (no seed) and can be recomputed from the stored window losses by
hand. ``exp`` is monotone, so the interval keeps its coverage and is asymmetric around the
perplexity, as it should be.

The sampling unit is the window. Windows are consecutive stretches of one text stream, so
neighbouring windows are correlated (same article, same topic); the interval treats them as
independent and is therefore, if anything, too narrow. It covers the evaluation text only:
the spread over calibration draws is measured separately (calib.seed sweeps). With a single
window there is no interval (``None``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

from twossp.devices import input_device
from twossp.forward import nll_sum
from twossp.progress import track

CONFIDENCE = 0.95


@dataclass
class PerplexityResult:
    """Perplexity of one token stream.

    Attributes:
        ppl: ``exp`` of the token-weighted mean NLL over all windows.
        tokens: predicted tokens (``windows * (seqlen - 1)``).
        windows: windows scored.
        seqlen: tokens per window.
        window_nll: mean NLL (nats per token) of each window, in stream order.
        window_index: the position of each scored window in the stream (window ``i`` starts
            at token ``i * seqlen``), in the order of ``window_nll``.
        ci_low, ci_high: the 95% interval of ``ppl`` (:func:`ppl_interval`); ``None`` with
            a single window.
    """

    ppl: float
    tokens: int
    windows: int
    seqlen: int
    window_nll: list[float] = field(default_factory=list)
    window_index: list[int] = field(default_factory=list)
    ci_low: float | None = None
    ci_high: float | None = None


WINDOW_SAMPLES = ("spread", "first")


def window_index(available: int, max_windows: int | None, sample: str = "spread") -> list[int]:
    """The windows scored out of ``available``: all of them without ``max_windows``; else
    ``max_windows`` of them, spread evenly (the middle of each of ``max_windows`` equal strata)
    or the first ones (``sample="first"``)."""
    if sample not in WINDOW_SAMPLES:
        raise ValueError(f"window sample must be one of {WINDOW_SAMPLES}, got {sample!r}")
    k = available if max_windows is None else min(available, max_windows)
    if sample == "first" or k == available:
        return list(range(k))
    return [(2 * i + 1) * available // (2 * k) for i in range(k)]


def windows(
    ids: torch.Tensor, seqlen: int, max_windows: int | None = None, sample: str = "spread"
) -> torch.Tensor:
    """Cut a 1-D token stream into non-overlapping windows of ``seqlen`` tokens and keep the
    :func:`window_index` ones: ``[n, seqlen]``."""
    ids = ids.reshape(-1)
    available = ids.numel() // seqlen
    if available == 0:
        raise ValueError(f"only {ids.numel()} tokens, fewer than one window of {seqlen}")
    index = window_index(available, max_windows, sample)
    return ids[: available * seqlen].view(available, seqlen)[index]


def _t_central(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin θ · (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... up to cos^(df-2)θ)
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= (k - 1) / k * cos2
            total += term
        return sin * total
    total = theta  # 2/π · (θ + sin θ · (cos θ + 2/3 cos³θ + ... up to cos^(df-2)θ))
    if df > 1:
        term = acc = math.cos(theta)
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * cos2
            acc += term
        total += sin * acc
    return 2 / math.pi * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 < p < 1``) of Student's t with ``df`` degrees of freedom.

    Closed-form CDF and bisection, so the core install needs no scipy.
    """
    if not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1, got {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"t_quantile needs an integer df >= 1, got {df}")
    target = 2 * p - 1
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < target:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_central(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


def ppl_interval(
    window_nll: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The t interval of perplexity from per-window mean NLLs (see the module docstring).

    Args:
        window_nll: mean NLL of each window (windows of equal length).
        confidence: coverage of the interval, e.g. 0.95.

    Returns:
        ``(low, high)`` in perplexity, or ``None`` for fewer than two windows.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(window_nll)
    if n < 2:
        return None
    mean = math.fsum(window_nll) / n
    half = t_quantile((1 + confidence) / 2, n - 1) * statistics.stdev(window_nll) / math.sqrt(n)
    return math.exp(mean - half), math.exp(mean + half)


@torch.no_grad()
def perplexity(
    model,
    ids: torch.Tensor,
    seqlen: int,
    batch_size: int = 1,
    max_windows: int | None = None,
    desc: str = "perplexity",
    progress: bool = True,
    sample: str = "spread",
) -> PerplexityResult:
    """Perplexity of ``model`` on the token stream ``ids``, with each window's NLL (the
    windows of :func:`windows`: all, or ``max_windows`` picked by ``sample``)."""
    chunks = windows(ids, seqlen, max_windows, sample)
    index = window_index(ids.numel() // seqlen, max_windows, sample)
    device = input_device(model)
    total_nll, total_tokens = 0.0, 0
    window_nll: list[float] = []
    # a bar on a terminal; otherwise the position in the log every 30 s or so
    where = track(total=len(chunks), desc=desc, unit="windows", show=progress, announce=False)
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        nll, n = nll_sum(logits, batch)
        total_nll += nll  # the reported value sums per batch, exactly as before windows
        total_tokens += n
        for row in range(len(batch)):
            row_nll, row_n = nll_sum(logits[row : row + 1], batch[row : row + 1])
            window_nll.append(row_nll / row_n)
        where.update(len(batch))
    where.close()
    mean = total_nll / total_tokens
    low, high = ppl_interval(window_nll) or (None, None)
    return PerplexityResult(
        ppl=math.exp(mean),
        tokens=total_tokens,
        windows=len(chunks),
        seqlen=seqlen,
        window_nll=window_nll,
        window_index=index,
        ci_low=low,
        ci_high=high,
    )
