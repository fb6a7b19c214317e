"""Perplexity oracles, and its interval on cases with a known answer."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from torch import nn

from tests.conftest import needs_shared, run_spec
from twossp.evaluation.perplexity import (
    perplexity,
    ppl_interval,
    t_quantile,
    window_index,
    windows,
)


class _Uniform(nn.Module):
    """Predicts the uniform distribution over ``vocab`` tokens."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        return type("Out", (), {"logits": logits})()


class _Oracle(_Uniform):
    """Puts probability p on the true next token (which it peeks at)."""

    def __init__(self, vocab, p, stream):
        super().__init__(vocab)
        self.p, self.stream = p, stream

    def forward(self, input_ids, use_cache=False):
        logits = torch.full(
            (*input_ids.shape, self.vocab), math.log((1 - self.p) / (self.vocab - 1))
        )
        nxt = torch.roll(input_ids, -1, dims=1)
        logits.scatter_(2, nxt[..., None], math.log(self.p))
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("batch", [1, 3])
def test_uniform_logits_give_vocab_size(batch):
    ids = torch.randint(0, 97, (1000,))
    res = perplexity(_Uniform(97), ids, seqlen=64, batch_size=batch, progress=False)
    assert res.ppl == pytest.approx(97, rel=1e-6)  # float32 cross-entropy
    assert res.windows == 1000 // 64
    assert res.tokens == res.windows * 63


def test_known_probability_gives_inverse():
    ids = torch.randint(0, 50, (640,))
    res = perplexity(_Oracle(50, 0.25, ids), ids, seqlen=32, progress=False)
    assert res.ppl == pytest.approx(4.0, rel=1e-6)


def test_windows_drop_remainder_and_cap():
    ids = torch.arange(100)
    assert windows(ids, 30).shape == (3, 30)
    assert windows(ids, 30, max_windows=2).shape == (2, 30)
    with pytest.raises(ValueError, match="fewer than one window"):
        windows(ids, 200)


def test_fewer_windows_are_spread_over_the_whole_stream():
    # the middle window of each of k equal strata, never the first k
    assert window_index(100, 4) == [12, 37, 62, 87]
    assert window_index(10, 3) == [1, 5, 8]
    assert window_index(5, None) == window_index(5, 9) == [0, 1, 2, 3, 4]
    assert window_index(100, 4, "first") == [0, 1, 2, 3]
    spread = window_index(1000, 48)
    assert len(set(spread)) == 48 and spread[0] < 1000 // 48 and spread[-1] > 1000 - 1000 // 48
    ids = torch.arange(100)  # window w holds tokens 10w .. 10w+9
    assert windows(ids, 10, max_windows=2)[:, 0].tolist() == [20, 70]
    assert windows(ids, 10, max_windows=2, sample="first")[:, 0].tolist() == [0, 10]
    with pytest.raises(ValueError, match="spread, first|one of"):
        window_index(10, 2, "random")


def test_result_names_the_windows_it_scored():
    ids = torch.arange(10).repeat_interleave(16)  # window w: sixteen tokens equal to w
    res = perplexity(
        _PerWindow(10, [0.1 * (w + 1) for w in range(10)]), ids, 16, 1, 3, progress=False
    )
    assert res.window_index == [1, 5, 8]
    expected = [-math.log(0.1 * (w + 1)) for w in (1, 5, 8)]
    assert res.window_nll == pytest.approx(expected, rel=1e-5)


class _PerWindow(_Uniform):
    """Puts probability ``probs[w]`` on the true next token of window ``w``; the window is
    told by its first token, which is ``w``."""

    def __init__(self, vocab, probs):
        super().__init__(vocab)
        self.probs = probs

    def forward(self, input_ids, use_cache=False):
        p = torch.tensor([self.probs[int(w)] for w in input_ids[:, 0]])[:, None, None]
        rest = torch.log((1 - p) / (self.vocab - 1))
        logits = rest.expand(*input_ids.shape, self.vocab).clone()
        nxt = torch.roll(input_ids, -1, dims=1)
        logits.scatter_(2, nxt[..., None], torch.log(p).expand(*input_ids.shape, 1))
        return type("Out", (), {"logits": logits})()


def _stream(n_windows: int, seqlen: int, vocab: int) -> torch.Tensor:
    ids = torch.randint(0, vocab, (n_windows, seqlen))
    ids[:, 0] = torch.arange(n_windows)  # window w starts with token w
    return ids.reshape(-1)


def test_two_window_losses_give_the_hand_computed_t_interval():
    # NLLs ln 2 and ln 8: mean 2 ln 2 (ppl 4), sample sd sqrt(2) ln 2, n = 2, so the
    # half-width is t(0.975, 1) * sqrt(2) ln 2 / sqrt(2) = tan(0.475 pi) ln 2, and the
    # interval is 4 * 2^(-+ tan(0.475 pi)) (t with 1 df is Cauchy: quantile tan(pi (p - 1/2))).
    ids = _stream(2, 16, 40)
    res = perplexity(_PerWindow(40, [0.5, 0.125]), ids, seqlen=16, batch_size=2, progress=False)
    assert res.window_nll == pytest.approx([math.log(2), math.log(8)], rel=1e-6)
    assert res.ppl == pytest.approx(4.0, rel=1e-6)
    half = math.tan(0.475 * math.pi)
    assert res.ci_low == pytest.approx(4 * 2**-half, rel=1e-5)
    assert res.ci_high == pytest.approx(4 * 2**half, rel=1e-5)


def test_equal_window_losses_give_a_zero_width_interval_at_the_value():
    ids = torch.randint(0, 97, (1000,))
    res = perplexity(_Uniform(97), ids, seqlen=64, batch_size=4, progress=False)
    assert len(res.window_nll) == res.windows == 15
    assert res.ci_low == pytest.approx(res.ppl, rel=1e-6)
    assert res.ci_high == pytest.approx(res.ppl, rel=1e-6)


def test_single_window_has_no_interval():
    res = perplexity(_Uniform(11), torch.randint(0, 11, (40,)), seqlen=32, progress=False)
    assert res.windows == 1 and len(res.window_nll) == 1
    assert (res.ci_low, res.ci_high) == (None, None)
    assert ppl_interval([2.0]) is None and ppl_interval([]) is None


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_window_losses_do_not_depend_on_batching_and_average_to_the_value(batch):
    probs = [0.9, 0.5, 0.3, 0.2, 0.05, 0.6, 0.7]
    ids = _stream(len(probs), 20, 30)
    res = perplexity(_PerWindow(30, probs), ids, seqlen=20, batch_size=batch, progress=False)
    assert res.window_nll == pytest.approx([-math.log(p) for p in probs], rel=1e-5)
    assert math.exp(sum(res.window_nll) / len(probs)) == pytest.approx(res.ppl, rel=1e-6)
    assert res.ci_low < res.ppl < res.ci_high
    assert (res.ci_low, res.ci_high) == ppl_interval(res.window_nll)  # recomputable


def test_interval_matches_the_t_formula_and_is_asymmetric():
    nll = [3.1, 3.4, 2.9, 3.6, 3.0, 3.3]
    low, high = ppl_interval(nll)
    mean, sd = sum(nll) / 6, statistics.stdev(nll)
    half = 2.5705818356363146 * sd / math.sqrt(6)  # t(0.975, 5): scipy.stats.t.ppf(0.975, 5)
    assert low == pytest.approx(math.exp(mean - half), rel=1e-9)
    assert high == pytest.approx(math.exp(mean + half), rel=1e-9)
    assert high - math.exp(mean) > math.exp(mean) - low  # exp stretches the upper side
    narrower = ppl_interval(nll, confidence=0.5)
    assert low < narrower[0] < narrower[1] < high


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, math.tan(0.475 * math.pi)),  # Cauchy
        (0.975, 2, 0.95 * math.sqrt(2 / (1 - 0.95**2))),  # P(|T| <= t) = t / sqrt(2 + t^2)
        (0.9, 2, 0.8 * math.sqrt(2 / (1 - 0.8**2))),
    ],
)
def test_t_quantile_closed_forms(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-12)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 40), 63, 100, 255, 1000]:
        for p in (0.6, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10), (p, df)


@pytest.mark.parametrize("p, df", [(0.5, 3), (1.0, 3), (0.975, 0), (0.975, 2.5)])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(ValueError, match="t_quantile needs"):
        t_quantile(p, df)


@needs_shared()
@pytest.mark.shared
def test_ppl_row_in_the_parquet_carries_its_interval_and_window_losses(tmp_path):
    from twossp.pipeline import run
    from twossp.results import read_runs

    spec = run_spec(
        f"paths.results_dir={tmp_path}",
        "method=dense",
        "progress=false",
        "eval.max_windows=3",
        "eval.use=[wikitext2]",
    )
    run(spec)
    row = read_runs(tmp_path).query("metric == 'ppl'").iloc[0]
    window_nll = json.loads(row["variant"])["window_nll"]
    assert len(window_nll) == 3 and len(set(window_nll)) == 3  # full floats, not rounded
    assert math.exp(sum(window_nll) / 3) == pytest.approx(row["value"], rel=1e-6)
    assert row["ci_low"] < row["value"] < row["ci_high"]
    assert (row["ci_low"], row["ci_high"]) == ppl_interval(window_nll)


def test_a_long_evaluation_logs_its_position(monkeypatch, caplog):
    import itertools
    import logging

    import twossp.progress

    ticks = itertools.count(0, 20.0)  # every step seems to take 20 s
    monkeypatch.setattr(twossp.progress, "default_clock", lambda: next(ticks))
    ids = torch.randint(0, 50, (640,))
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        perplexity(_Uniform(50), ids, 32, 2, desc="ppl wikitext2", progress=False)
    lines = [r.getMessage() for r in caplog.records]
    assert "ppl wikitext2: 4/20 windows, 40 s elapsed, about 2 min 40 s left" in lines
    assert sum("windows" in line for line in lines) >= 20 * 20 // 60  # one a minute or more
