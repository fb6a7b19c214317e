"""Efficiency accounting (FLOPs, memory, timing, batch sizing), multi-device blocks, the bench."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.flops import forward_flops
from twossp.adapters import ModelAdapter, get_adapter
from twossp.devices import execution_device, input_device
from twossp.evaluation import costs
from twossp.evaluation import runtime as rt
from twossp.forward import run_blocks
from twossp.methods import PruneContext, build_method
from twossp.modeling import count_params
from twossp.pipeline import peak_memory_metrics
from twossp.surgery import remove_attention, remove_blocks
from twossp.testing import tiny_model


def cuda(test):
    """A test that needs a CUDA GPU (selected by ``-m gpu`` in bench/device_check.sh)."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    return pytest.mark.gpu(skip(test))


def _counted_flops(model, ids) -> int:
    """FLOPs torch's own counter sees (eager attention, so QK^T and AV are plain matmuls)."""
    model.set_attn_implementation("eager")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids, use_cache=False)
    return counter.get_total_flops()


@pytest.mark.parametrize("family", ["llama", "phi3", "phi"])
def test_flops_match_torch_counter(family):
    model = tiny_model(family, n_blocks=3)
    ids = torch.randint(3, 128, (2, 24))
    assert forward_flops(model, 2, 24, causal=False).total == _counted_flops(model, ids)


def test_flops_follow_surgery():
    model = tiny_model("llama", n_blocks=4)
    adapter = get_adapter(model)
    dense = forward_flops(model, 1, 32)
    remove_attention(adapter, 1)
    adapter.keep_ffn_neurons(2, torch.arange(40))
    remove_blocks(adapter, [3])
    pruned = forward_flops(model, 1, 32, causal=False)
    assert pruned.total == _counted_flops(model, torch.randint(3, 128, (1, 32)))
    assert forward_flops(model, 1, 32).attention == pytest.approx(dense.attention * 2 / 4)
    # causal attention does L(L+1)/2 of the L^2 score entries
    assert dense.attention == pytest.approx(
        forward_flops(tiny_model("llama", n_blocks=4), 1, 32, causal=False).attention
        * (32 * 33 / 2)
        / 32**2
    )


def test_flops_of_rotated_model_count_shortcuts():
    model = tiny_model("llama", n_blocks=3)
    calib = torch.randint(3, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    build_method("slicegpt").prune(model, PruneContext(0.25, calib, progress=False))
    ids = torch.randint(3, 128, (1, 16))
    assert forward_flops(model, 1, 16, causal=False).total == _counted_flops(model, ids)


def test_weight_bytes_count_tied_once():
    model = tiny_model("llama", n_blocks=2, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert costs.weight_bytes(model) == params * 2 + buffers
    model.lm_head.weight = model.model.embed_tokens.weight  # tie
    assert count_params(model) == params - model.lm_head.weight.numel()
    assert costs.weight_bytes(model) == count_params(model) * 2 + buffers


def test_cpu_peak_memory_sees_allocations():
    n = 4 * 2**20

    def alloc():
        x = torch.ones(n // 4, dtype=torch.float32)
        y = x * 2  # both alive: 2 n bytes
        return y.sum()

    peak = costs.peak_call_memory(alloc, "cpu")
    assert 2 * n <= peak < 2 * n + 2**16
    assert costs.peak_call_memory(lambda: None, "cpu") < 2**12


def test_activation_estimate_bounds_measured_peak():
    model = tiny_model("llama", n_blocks=2, hidden=64, intermediate=160, vocab=512, context=512)
    ids = torch.randint(3, 512, (1, 256))
    measured = costs.peak_call_memory(costs.forward_fn(model, ids), "cpu")
    estimate = rt.activation_bytes_per_sample(model, 256)
    assert measured <= estimate < 8 * measured


def test_auto_batch_size():
    model = tiny_model("llama", n_blocks=2)
    per = rt.activation_bytes_per_sample(model, 128)
    assert rt.auto_batch_size(model, 128) == rt.CPU_BATCH_SIZE  # no CUDA: fixed default
    assert rt.auto_batch_size(model, 128, free_bytes=10 * per) == 8  # 80 % of 10 samples
    assert rt.auto_batch_size(model, 128, free_bytes=per // 10) == 1
    assert rt.auto_batch_size(model, 128, free_bytes=10**6 * per, max_batch=32) == 32
    assert rt.resolve_batch_size("auto", model, 128) == rt.CPU_BATCH_SIZE
    assert rt.resolve_batch_size(4, model, 128) == rt.resolve_batch_size("4", model, 128) == 4
    for bad in (0, -2, "big"):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            rt.resolve_batch_size(bad, model, 128)


def test_time_interleaved_rotates_and_takes_medians():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timing = costs.time_interleaved(fns, "cpu", warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t.times) == 3 and t.median >= 0 for t in timing.values())
    with pytest.raises(ValueError, match="repeats >= 1"):
        costs.time_interleaved({"a": lambda: None}, repeats=0)


def test_peak_tracking_is_cuda_only_off_gpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with rt.track_peak_memory() as peak:
        torch.ones(1000)
    assert peak.peak_bytes is None and peak.peak_gib is None
    assert peak_memory_metrics({"prune": peak}) == []
    measured = rt.PeakMemory({"cuda:0": 2**30, "cuda:1": 2**30})
    [row] = peak_memory_metrics({"eval": measured})
    assert (row.metric, row.phase, row.dataset, row.value) == ("peak_memory_gib", "eval", None, 2.0)


# --- blocks on different devices ---------------------------------------------------------------


class _Recorder(nn.Module):
    """A block that computes on ``device``; records where its inputs arrive."""

    def __init__(self, device: str):
        super().__init__()
        self.device = torch.device(device)
        self.seen: list = []

    def forward(self, hidden, **kwargs):
        cos, sin = kwargs["position_embeddings"]
        self.seen.append((hidden.device.type, cos.device.type, kwargs["flag"]))
        return (hidden,)


def test_run_blocks_moves_state_to_each_blocks_device(monkeypatch):
    # One CPU is the only real device here; "meta" stands in for a second one.
    monkeypatch.setattr("twossp.forward.execution_device", lambda block: block.device)
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([_Recorder("cpu"), _Recorder("meta"), _Recorder("meta")])
    adapter = ModelAdapter(model)
    kwargs = {"position_embeddings": (torch.ones(2), torch.ones(2)), "flag": True}
    out = run_blocks(adapter, torch.ones(3), kwargs)
    assert [b.seen for b in model.model.layers] == [
        [("cpu", "cpu", True)],
        [("meta", "meta", True)],
        [("meta", "meta", True)],
    ]
    assert out.device.type == "meta"
    assert kwargs["position_embeddings"][0].device.type == "cpu"  # the caller's kwargs untouched


def test_offloaded_blocks_score_and_evaluate_like_resident_ones(tmp_path):
    from accelerate import dispatch_model

    from twossp.evaluation.perplexity import perplexity
    from twossp.scoring import SubmoduleScorer

    model = tiny_model("llama", n_blocks=4)
    calib = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    ref = SubmoduleScorer(get_adapter(model), calib[:1])
    expected = [ref.nll_without("attention", i) for i in range(4)]
    expected_ppl = perplexity(model, calib.reshape(-1), 16, 2, progress=False).ppl

    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.layers.3": "cpu",
    }
    offloaded = dispatch_model(
        copy.deepcopy(model), device_map, main_device="cpu", offload_dir=str(tmp_path)
    )
    adapter = get_adapter(offloaded)
    assert next(adapter.blocks[1].parameters()).device.type == "meta"  # weights on disk
    assert execution_device(adapter.blocks[1]) == torch.device("cpu")
    assert input_device(offloaded) == torch.device("cpu")
    scorer = SubmoduleScorer(adapter, calib[:1])
    assert [scorer.nll_without("attention", i) for i in range(4)] == expected
    assert perplexity(offloaded, calib.reshape(-1), 16, 2, progress=False).ppl == expected_ppl


@cuda
def test_cuda_timing_and_memory():
    model = tiny_model("llama", n_blocks=2).cuda()
    ids = torch.randint(3, 128, (1, 64))
    fn = costs.forward_fn(model, ids)
    assert costs.time_interleaved({"f": fn}, "cuda", warmup=1, repeats=2)["f"].median > 0
    logits_bytes = 64 * 128 * 4
    assert costs.peak_call_memory(fn, "cuda") >= logits_bytes
    with rt.track_peak_memory() as peak:
        fn()
    assert peak.peak_bytes >= costs.weight_bytes(model)
    assert 1 <= rt.auto_batch_size(model, 64) <= 64


# --- the bench ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_quick_run_writes_report(tmp_path):
    from bench.common import BenchConfig
    from bench.run import run, write
    from bench.sections import ALIGNED_TWOSSP

    cfg = BenchConfig.quick_config(
        sections=("prune", "stage2", "eval", "forward"), methods=("dense", "twossp", "shortgpt")
    )
    result = run(cfg)
    md, js = write(result, tmp_path)
    data = json.loads(js.read_text())
    forward = {r["method"]: r for r in data["forward"]}
    assert set(forward) == {"dense", "twossp", "shortgpt", ALIGNED_TWOSSP}
    assert all(r["same_choices"] for r in data["stage2"])
    dense = data["forward"][0]
    assert dense["method"] == "dense" and dense["latency_ratio"] == 1.0
    assert 0 < data["forward"][1]["flop_ratio"] < 1
    # The diagnostic copy: the same model with every FFN width cut to a multiple of 8.
    assert forward[ALIGNED_TWOSSP]["diagnostic"] and not forward["twossp"]["diagnostic"]
    assert forward[ALIGNED_TWOSSP]["flop_ratio"] < forward["twossp"]["flop_ratio"]
    names = [t["target"] for t in data["targets"]]
    assert any("stage-2 cache" in n for n in names) and any("overhead" in n for n in names)
    assert any(n.startswith("twossp:") for n in names)
    assert not any(n.startswith(ALIGNED_TWOSSP) for n in names)  # no target of its own
    assert "## Targets" in md.read_text()


def test_eval_batch_size_auto_reaches_the_run_spec():
    from hydra import compose, initialize_config_dir

    from tests.conftest import ROOT
    from twossp.config import register_method_schemas, register_resolvers, to_run_spec

    register_resolvers()

    register_method_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        auto = to_run_spec(compose("config", overrides=["eval.batch_size=auto"]))
        fixed = to_run_spec(compose("config", overrides=["eval.batch_size=4"]))
    assert auto.eval.batch_size == "auto" and fixed.eval.batch_size == 4
    assert auto.config_hash == fixed.config_hash  # the batch does not change a result


def test_width_rounding_diagnostic_copies_and_aligns():
    from bench.sections import ffn_width_rounded_down
    from twossp.adapters import get_adapter

    model = tiny_model("llama")  # FFN width 160 in every block
    get_adapter(model).keep_ffn_neurons(0, torch.arange(150))
    aligned = get_adapter(ffn_width_rounded_down(model, 8))
    assert [aligned.ffn_width(i) for i in range(4)] == [144, 160, 160, 160]
    assert get_adapter(model).ffn_width(0) == 150  # the original is untouched
