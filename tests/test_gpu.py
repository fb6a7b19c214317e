"""On a CUDA GPU: 2SSP makes the choices it makes on the CPU, and a bf16 run completes.

Skipped without CUDA; ``bench/device_check.sh`` runs them (``-m gpu``) when a GPU is lent.
"""

from __future__ import annotations

import pytest
import torch

from twossp.methods import PruneContext
from twossp.methods.twossp import TwoSSP
from twossp.testing import tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _plan(device: str, dtype=torch.float32):
    model = tiny_model("llama", n_blocks=6, dtype=dtype).to(device)
    calib = torch.randint(3, 128, (8, 64), generator=torch.Generator().manual_seed(0))
    return TwoSSP().prune(model, PruneContext(0.375, calib, seed=0, progress=False)), model


def test_twossp_on_cuda_chooses_as_on_cpu():
    on_cpu, _ = _plan("cpu")
    on_gpu, model = _plan("cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert on_gpu.attention == on_cpu.attention
    for block, kept in on_cpu.ffn_keep.items():  # float rounding may swap a borderline neuron
        same = len(set(kept) & set(on_gpu.ffn_keep[block])) / len(kept)
        assert same >= 0.95, (block, same)


def test_twossp_in_bfloat16_on_cuda_runs_and_shrinks():
    plan, model = _plan("cuda", torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16 and plan.attention
    ids = torch.randint(3, 128, (1, 16), device="cuda")
    assert torch.isfinite(model(ids).logits.float()).all()
