"""The device-check scripts: the 7B-shaped 2SSP timing script agrees with the method, and the
shell script that a lent GPU runs is valid bash naming files that exist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from bench import gpu_llama7b as g
from twossp.methods import PruneContext
from twossp.methods.twossp import TwoSSP

ROOT = Path(__file__).resolve().parents[1]


def test_timed_stages_prune_as_the_method_does():
    cpu = torch.device("cpu")
    calib = torch.randint(
        3, g.TINY["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(1)
    )
    timed_model = g.build(g.TINY, cpu, torch.float32)
    timed = g.prune_timed(timed_model, calib, 0.375, TwoSSP())
    reference = g.build(g.TINY, cpu, torch.float32)
    plan = TwoSSP().prune(reference, PruneContext(0.375, calib, seed=0, progress=False))
    assert timed["attention_removed"] == plan.info["attention_order"]
    assert timed["ffn_kept"] == plan.ffn_keep
    assert timed["stage1_seconds"] > 0 and timed["stage2_seconds"] > 0
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
