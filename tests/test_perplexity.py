"""Perplexity oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from twossp.evaluation.perplexity import perplexity, windows


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
