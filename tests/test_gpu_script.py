"""The device-check scripts: 2SSP's timed prune (what the 7B-shaped script calls) prunes as
``prune`` does, the script's CPU smoke run works, and the shell script is valid bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from bench import gpu_llama7b as g
from twossp.methods import PruneContext
from twossp.methods.twossp import TwoSSP

ROOT = Path(__file__).resolve().parents[1]


def test_timed_stages_prune_as_the_method_does(monkeypatch):
    """Each stage's seconds are what the clock reads across that stage's work, and timing
    changes nothing: the plan and weights equal a plain prune with no clock given."""
    from twossp.methods import twossp as method_module

    now = [0.0]  # a fake clock each stage advances by a known, distinct amount

    def advancing(work, seconds):
        def run(*args, **kwargs):
            out = work(*args, **kwargs)
            now[0] += seconds
            return out

        return run

    monkeypatch.setattr(method_module, "prune_ffn", advancing(method_module.prune_ffn, 3.0))
    monkeypatch.setattr(
        method_module, "stage2_attention", advancing(method_module.stage2_attention, 5.0)
    )
    cpu = torch.device("cpu")
    calib = torch.randint(
        3, g.TINY["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(1)
    )
    ctx = PruneContext(0.375, calib, seed=0, progress=False)
    timed_model = g.build(g.TINY, cpu, torch.float32)
    timed, seconds = g.timed_prune(timed_model, ctx, clock=lambda: now[0])
    assert seconds == {"stage1": 3.0, "stage2": 5.0}
    reference = g.build(g.TINY, cpu, torch.float32)
    budget = TwoSSP().budget(reference, ctx.sparsity)
    plan = TwoSSP().prune(reference, ctx)
    assert now[0] == 16.0  # the plain prune ran the same two stages, untimed
    assert len(timed.attention) == budget.n_attn >= 1
    assert {len(k) for k in timed.ffn_keep.values()} == {budget.ffn_keep}
    assert timed.to_json() == plan.to_json()
    ours, theirs = timed_model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_tiny_run_writes_its_figures(tmp_path):
    out = tmp_path / "r.json"
    result = g.main(["--tiny", "--out", str(out)])
    assert out.exists() and result["device"] == "cpu" and result["peak_gib"] is None
    assert result["params_after"] < result["params_before"] and result["n_attn"] >= 1


def test_device_script_is_valid_bash_and_names_what_exists():
    script = ROOT / "bench" / "device_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "bench.gpu_llama7b" in text and "-m gpu" in text
