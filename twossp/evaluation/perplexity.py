"""Perplexity the way pruning papers compute it.

The evaluation split is joined into one token stream, cut into non-overlapping windows of
``seqlen`` tokens (the remainder is dropped) and scored with teacher forcing;
perplexity is ``exp`` of the token-weighted mean NLL over all windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from twossp.devices import input_device
from twossp.forward import nll_sum


@dataclass
class PerplexityResult:
    ppl: float
    tokens: int
    windows: int
    seqlen: int


def windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Cut a 1-D token stream into ``[n, seqlen]`` non-overlapping windows."""
    ids = ids.reshape(-1)
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"only {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: n * seqlen].view(n, seqlen)


@torch.no_grad()
def perplexity(
    model,
    ids: torch.Tensor,
    seqlen: int,
    batch_size: int = 1,
    max_windows: int | None = None,
    desc: str = "perplexity",
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on the token stream ``ids``."""
    chunks = windows(ids, seqlen, max_windows)
    device = input_device(model)
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(
        range(0, len(chunks), batch_size), desc=desc, disable=not progress, leave=False
    ):
        batch = chunks[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        nll, n = nll_sum(logits, batch)
        total_nll += nll
        total_tokens += n
    mean = total_nll / total_tokens
    return PerplexityResult(
        ppl=math.exp(mean), tokens=total_tokens, windows=len(chunks), seqlen=seqlen
    )
