"""Run a decoder block by block from cached hidden states.

Several methods score a change in block ``i`` by re-running only blocks ``i..N-1``. The
kwargs each block needs (rotary embeddings, causal mask, ...) are captured once from a real
forward pass, so no architecture's internals are reimplemented here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twossp.adapters import ModelAdapter
from twossp.devices import execution_device


class _Stop(Exception):
    pass


class BlockKwargs(dict):
    """The kwargs blocks get, one set per attention type (``{type: kwargs}``): a model mixing
    full and sliding-window layers (Gemma 2, Qwen2 with a sliding window) passes block ``i``
    the mask of type ``config.layer_types[i]``."""

    def for_block(self, adapter: ModelAdapter, i: int) -> dict:
        return self[adapter.layer_type(i)]


@torch.no_grad()
def capture_block_inputs(adapter: ModelAdapter, input_ids: torch.Tensor):
    """Return ``(hidden, kwargs)``: the input of block 0 and the :class:`BlockKwargs` of every
    attention type present (the forward stops at the first block of the last new type)."""
    firsts: dict[str, int] = {}
    for i in range(adapter.num_blocks):
        firsts.setdefault(adapter.layer_type(i), i)
    captured: dict = {"kwargs": BlockKwargs()}

    def hook(kind, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if "hidden" not in captured:
            captured["hidden"] = hidden
        captured["kwargs"][kind] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if len(captured["kwargs"]) == len(firsts):
            raise _Stop

    handles = [
        adapter.blocks[i].register_forward_pre_hook(
            lambda m, a, k, kind=kind: hook(kind, m, a, k), with_kwargs=True
        )
        for kind, i in firsts.items()
    ]
    try:
        adapter.model(input_ids=input_ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured["hidden"], captured["kwargs"]


def _output(out):
    return out[0] if isinstance(out, tuple) else out


def _to_device(value, device: torch.device | None):
    """``value`` (a tensor, or a tuple / list / dict holding tensors) on ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _to_device(v, device)) for k, v in value.items())
    return value


@torch.no_grad()
def run_blocks(
    adapter: ModelAdapter,
    hidden: torch.Tensor,
    kwargs: BlockKwargs | dict,
    start: int = 0,
    end: int | None = None,
) -> torch.Tensor:
    """Run blocks ``start..end-1`` on ``hidden``.

    Blocks may live on different devices (``device_map``): the hidden state and the block
    kwargs follow each block to its device, so the result is on the last block's device.
    """
    end = adapter.num_blocks if end is None else end
    for i in range(start, end):
        block = adapter.blocks[i]
        device = execution_device(block)
        if device is not None and hidden.device != device:
            hidden = hidden.to(device)
            kwargs = _to_device(kwargs, device)
        block_kwargs = kwargs.for_block(adapter, i) if isinstance(kwargs, BlockKwargs) else kwargs
        hidden = _output(block(hidden, **block_kwargs))
    return hidden


@torch.no_grad()
def block_inputs(adapter: ModelAdapter, hidden: torch.Tensor, kwargs: dict) -> list[torch.Tensor]:
    """Inputs of every block, plus the final hidden state as the last entry."""
    states = [hidden]
    for i in range(adapter.num_blocks):
        states.append(run_blocks(adapter, states[-1], kwargs, i, i + 1))
    return states


@torch.no_grad()
def logits_from_hidden(adapter: ModelAdapter, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits from the last block's output: final norm, head, and whatever the
    architecture applies after the head (:meth:`ModelAdapter.finish_logits`)."""
    hidden = _to_device(hidden, execution_device(adapter.final_norm))
    hidden = adapter.final_norm(hidden)
    logits = adapter.lm_head(_to_device(hidden, execution_device(adapter.lm_head)))
    return adapter.finish_logits(logits)


def nll_sum(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (float64) and the number of predictions."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].to(logits.device)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
    )
    return float(loss.double()), targets.numel()
