"""Inference measurement: greedy decoding with the KV cache on pruned models matches plain
forwards, the KV-cache size follows the remaining attention, the rows carry their units and
machine, the switch leaves other runs' hashes alone, and the speed-up table and frontier plot
render from a results file."""

from __future__ import annotations

import json

import pytest
import torch

from analysis import inference as analysis_inference
from baselines.slicegpt import SliceGPT
from tests.conftest import needs_shared, run_spec
from twossp.evaluation.inference import (
    InferenceSpec,
    first_window,
    greedy_generate,
    greedy_reference,
    measure,
)
from twossp.evaluation.kv_cache import cache_bytes, kv_shape
from twossp.methods import PruneContext
from twossp.plan import PrunePlan
from twossp.results import Metric, RunRecord, to_frame, write_run
from twossp.surgery import apply_plan
from twossp.testing import tiny_model

PROMPT = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(3))
CALIB = torch.randint(3, 128, (4, 32), generator=torch.Generator().manual_seed(0))
QUICK = InferenceSpec(warmup=0, repeats=2, prompt_tokens=8, new_tokens=4, decode_repeats=1)


def _without_attention(family: str, blocks=(0, 2)):
    model = tiny_model(family)
    keep = list(range(0, 160, 2))
    return apply_plan(model, PrunePlan(ffn_keep={1: keep}, attention=list(blocks)))


@pytest.mark.parametrize("family", ["llama", "gemma2", "phi"])
def test_generate_without_some_attention_matches_plain_forwards(family):
    model = _without_attention(family)
    out = greedy_generate(model, PROMPT, 10)
    assert out.sequences.shape == (1, 22)
    assert torch.equal(out.sequences, greedy_reference(model, PROMPT, 10))


def test_generate_of_a_slicegpt_model_matches_plain_forwards():
    model = tiny_model("llama")
    SliceGPT(round_to=1).prune(model, PruneContext(0.375, CALIB, seed=0, progress=False))
    out = greedy_generate(model, PROMPT, 10)
    assert torch.equal(out.sequences, greedy_reference(model, PROMPT, 10))


def test_kv_cache_size_follows_the_remaining_attention():
    dense, pruned = tiny_model("llama"), _without_attention("llama")
    # tiny llama: 2 KV heads of 16 dims, float32: 2 * 2 * 16 * 4 bytes per block
    assert kv_shape(dense).bytes_per_token == 4 * 256
    assert kv_shape(pruned).bytes_per_token == 2 * 256
    assert kv_shape(pruned).attention_blocks == [1, 3]
    for model in (dense, pruned):
        out = greedy_generate(model, PROMPT, 5)
        held, length = cache_bytes(out.past_key_values)
        assert length == PROMPT.shape[1] + 5 - 1
        assert held == kv_shape(model).bytes_per_token * length


def test_kv_cache_from_the_structure_matches_the_real_cache(family):
    model = _without_attention(family)  # every family (conftest's fixture)
    held, length = cache_bytes(greedy_generate(model, PROMPT, 3).past_key_values)
    assert held / length == kv_shape(model).bytes_per_token


def test_measure_writes_rows_with_units_and_the_machine():
    model = _without_attention("llama")
    window = torch.randint(3, 128, (64,), generator=torch.Generator().manual_seed(1))
    rows = {m.metric: m for m in measure(model, window, QUICK, "wikitext2")}
    assert set(rows) == {
        "prefill_latency",
        "decode_throughput",
        "kv_cache_bytes_per_token",
        "weight_bytes",
        "prefill_peak_bytes",
    }
    units = {k: m.unit for k, m in rows.items()}
    assert units["prefill_latency"] == "ms" and units["decode_throughput"] == "tokens/s"
    assert units["kv_cache_bytes_per_token"] == "bytes"
    prefill = rows["prefill_latency"]
    assert prefill.dataset == "wikitext2" and prefill.value > 0
    assert prefill.variant["repeats"] == 2 and len(prefill.variant["times_ms"]) == 2
    assert prefill.variant["min"] <= prefill.value <= prefill.variant["max"]
    for m in rows.values():
        assert m.variant["dtype"] == "float32" and m.variant["batch_size"] == 1
        assert m.variant["threads"] == torch.get_num_threads() and m.variant["device_name"]
    kv = rows["kv_cache_bytes_per_token"]
    assert kv.value == 512 and kv.variant["measured_bytes_per_token"] == 512
    assert rows["prefill_peak_bytes"].value > 0
    assert rows["decode_throughput"].variant["new_tokens"] == 4


def test_settings_are_checked_before_any_model():
    with pytest.raises(ValueError, match="exceeds the model's context of 200"):
        InferenceSpec(prompt_tokens=128, new_tokens=128).check(200)
    with pytest.raises(ValueError, match="exceeds the evaluation window of 64 tokens"):
        InferenceSpec(prompt_tokens=128, new_tokens=8).check(512, 64)
    with pytest.raises(ValueError, match="new_tokens must be an integer >= 1"):
        InferenceSpec(new_tokens=0).check()
    with pytest.raises(ValueError, match=r"unknown keys \['repeat'\]"):
        InferenceSpec.from_dict({"repeat": 3})
    assert InferenceSpec().counts(torch.device("cpu")) == (2, 5)
    assert InferenceSpec().counts(torch.device("cuda")) == (10, 10)
    assert InferenceSpec(warmup=1, repeats=3).counts(torch.device("cuda")) == (1, 3)


def test_first_window_reads_the_first_corpus_or_seeded_tokens():
    stream = torch.arange(100)
    window, source = first_window({"wikitext2": stream, "c4": stream + 1}, 16, 128)
    assert source == "wikitext2" and torch.equal(window, torch.arange(16))
    random, source = first_window({}, 16, 128)
    assert source == "random" and torch.equal(random, first_window({}, 16, 128)[0])


def test_published_overlays_switch_it_on_and_the_demo_leaves_it_off():
    from tests.conftest import compose_config
    from twossp.config import _inference

    for experiment in ("table1", "cpu_smollm2", "table2_downstream", "pruning_time"):
        assert _inference(compose_config(f"experiment={experiment}").eval) is not None
    assert _inference(compose_config("experiment=cpu_demo").eval) is None
    assert _inference(compose_config().eval) is None
    smollm2 = _inference(compose_config("experiment=cpu_smollm2").eval)
    assert (smollm2.warmup, smollm2.repeats, smollm2.decode_repeats) == (1, 5, 2)


def test_the_gpu_script_measures_dense_and_three_pruned_models(tmp_path):
    from bench import gpu_llama7b

    result = gpu_llama7b.main(["--tiny", "--out", str(tmp_path / "r.json")])
    models = result["inference"]["models"]
    assert list(models) == ["dense", "twossp", "shortgpt", "slicegpt"]
    kv = {name: m["kv_cache_bytes_per_token"]["value"] for name, m in models.items()}
    assert kv["twossp"] < kv["dense"] and kv["shortgpt"] < kv["dense"]
    assert kv["slicegpt"] == kv["dense"]  # SliceGPT keeps every K and V head
    assert models["shortgpt"]["calibration"] == [4, 32]
    assert json.loads((tmp_path / "r.json").read_text())["inference"]["models"].keys() == (
        models.keys()
    )


@needs_shared()
def test_the_switch_enters_the_hash_only_when_on():
    off = run_spec("model=stories260k", "method=dense")
    assert off.eval.inference is None
    assert run_spec("model=stories260k", "method=dense", "eval.inference=false").config_hash == (
        off.config_hash
    )
    on = run_spec("model=stories260k", "method=dense", "eval.inference=true")
    assert on.eval.inference == InferenceSpec()
    assert on.config_hash != off.config_hash
    fewer = run_spec(
        "model=stories260k",
        "method=dense",
        "eval.inference=true",
        "+eval.inference_settings.repeats=3",
    )
    assert fewer.eval.inference.repeats == 3 and fewer.config_hash != on.config_hash


@needs_shared()
def test_a_stories260k_run_records_inference_rows(tmp_path):
    from twossp.pipeline import run

    settings = [
        "eval.inference_settings.warmup=0",
        "eval.inference_settings.repeats=1",
        "eval.inference_settings.new_tokens=4",
        "eval.inference_settings.decode_repeats=1",
        "eval.inference_settings.peak_memory=false",
    ]
    common = [
        "model=stories260k",
        "eval.use=[wikitext2]",
        "eval.max_windows=1",
        "eval.inference=true",
        f"paths.results_dir={tmp_path}",
        "progress=false",
        "calib.n_samples=2",
        *settings,
    ]
    for method in ("dense", "twossp"):
        frame = run(run_spec(*common, f"method={method}", "sparsity=0.375")).frame
        values = frame.set_index("metric")["value"]
        assert {"ppl", "prefill_latency", "decode_throughput", "kv_cache_bytes_per_token"} <= set(
            values.index
        )
        assert frame.loc[frame["metric"] == "prefill_latency", "unit"].item() == "ms"
        if method == "dense":
            dense_kv = values["kv_cache_bytes_per_token"]
    assert values["kv_cache_bytes_per_token"] < dense_kv  # 2SSP removed attention


# --- analysis --------------------------------------------------------------------------------

MACHINE = {
    "device": "cpu",
    "device_name": "Test CPU",
    "dtype": "float32",
    "threads": 2,
    "batch_size": 1,
}


def _run(tmp_path, method, sparsity, prefill_ms, decode, kv, ppl, protocol="paper"):
    record = RunRecord(
        run_id=f"{method}{sparsity}{protocol}",
        config_hash=f"h{method}{sparsity}{protocol}",
        experiment="inf",
        model="tiny",
        model_path="tiny",
        method=method,
        method_params={},
        target_sparsity=sparsity,
        achieved_sparsity=sparsity,
        params_before=1000,
        params_after=int(1000 * (1 - sparsity)),
        block_params_before=800,
        block_params_after=int(800 * (1 - sparsity)),
        prune_seconds=1.0,
        seed=0,
        protocol=protocol,
        git_sha="x",
        versions={},
    )
    timed = {**MACHINE, "seqlen": 64}
    metrics = [
        Metric("ppl", "wikitext2", ppl, {"seqlen": 64}),
        Metric("prefill_latency", "wikitext2", prefill_ms, timed, unit="ms"),
        Metric(
            "decode_throughput",
            "wikitext2",
            decode,
            {**MACHINE, "prompt_tokens": 8, "new_tokens": 4},
            unit="tokens/s",
        ),
        Metric("kv_cache_bytes_per_token", None, kv, MACHINE, unit="bytes"),
        Metric("weight_bytes", None, 4000.0 * (1 - sparsity), MACHINE, unit="bytes"),
    ]
    write_run(to_frame(record, metrics), tmp_path / "runs" / f"{record.config_hash}.parquet")


@pytest.fixture
def merged(tmp_path):
    from analysis.collect import collect, load

    _run(tmp_path, "dense", 0.0, 10.0, 100.0, 1024.0, 10.0)
    _run(tmp_path, "twossp", 0.375, 8.0, 110.0, 768.0, 14.0)
    _run(tmp_path, "shortgpt", 0.375, 6.0, 150.0, 640.0, 30.0)
    _run(tmp_path, "shortgpt", 0.375, 5.0, 160.0, 640.0, 32.0, protocol="matched")
    collect([tmp_path], tmp_path / "merged.parquet")
    return load(tmp_path / "merged.parquet")


def test_speedup_table_compares_with_the_matching_dense_run(merged, tmp_path):
    table = analysis_inference.speedup_table(merged)
    values = table.values
    twossp = values.loc[("tiny", "paper", "twossp", "37.5%")]
    assert twossp["prefill x"] == pytest.approx(10.0 / 8.0)
    assert twossp["decode x"] == pytest.approx(1.1)
    assert twossp["KV saved %"] == pytest.approx(25.0)
    assert twossp["params removed %"] == pytest.approx(37.5)
    assert twossp["ppl wikitext2"] == 14.0
    matched = values.loc[("tiny", "matched", "shortgpt", "37.5%")]
    assert matched["prefill x"] == pytest.approx(2.0)  # the paper protocol's dense run
    assert any("another protocol" in n for n in table.notes)
    assert any("Test CPU, float32, 2 threads" in n for n in table.notes)
    paths = analysis_inference.render_tables(merged, tmp_path / "tables")
    assert {p.name for p in paths} == {"inference_speedup.md", "inference_speedup.tex"}
    assert "| tiny | paper | shortgpt | 37.5% | 37.5 | 6.00 | 1.67 |" in paths[0].read_text()


def test_no_dense_run_on_another_machine(merged):
    other = merged.copy()
    pruned = other["method"] != "dense"
    other.loc[pruned, "variant"] = other.loc[pruned, "variant"].map(
        lambda v: json.dumps({**json.loads(v), "threads": 8})
    )
    table = analysis_inference.speedup_table(other)
    assert table.values.index.names[-1] == "machine"  # two machines: never one column
    method = table.values.index.get_level_values("method")
    protocol = table.values.index.get_level_values("protocol")
    twossp = table.values[(method == "twossp") & (protocol == "paper")]
    assert len(twossp) == 1 and twossp["prefill x"].isna().all()  # no dense run with 8 threads
    assert table.values[method == "dense"]["prefill x"].tolist() == [1.0]
    assert any("no matching dense run" in n for n in table.notes)


def test_frontier_plot_renders_and_nothing_without_inference_rows(merged, tmp_path):
    paths = analysis_inference.render_plots(merged, tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "ppl_vs_prefill_speedup_tiny_matched.png",
        "ppl_vs_prefill_speedup_tiny_paper.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    plain = merged[merged["metric"] == "ppl"]
    assert analysis_inference.render_plots(plain, tmp_path / "none") == []
    assert analysis_inference.speedup_table(plain) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_on_cuda_in_bfloat16():
    model = _without_attention("llama").to("cuda", torch.bfloat16)
    window = torch.randint(3, 128, (64,), generator=torch.Generator().manual_seed(1))
    rows = {m.metric: m for m in measure(model, window, QUICK, "random")}
    prefill = rows["prefill_latency"]
    assert prefill.variant["clock"] == "cuda events" and prefill.value > 0
    assert prefill.variant["device_name"] == torch.cuda.get_device_name(0)
    assert rows["kv_cache_bytes_per_token"].value == 256  # bf16: half of float32's 512
    assert rows["kv_cache_bytes_per_token"].variant["measured_bytes_per_token"] == 256
    peak = rows["prefill_peak_bytes"]
    assert peak.value > 0 and peak.variant["total_bytes"] > peak.value
    exact = _without_attention("llama").to("cuda")  # float32: bf16 rounding could flip a tie
    assert torch.equal(
        greedy_generate(exact, PROMPT, 6).sequences.cpu(),
        greedy_reference(exact, PROMPT, 6).cpu(),
    )


@needs_shared()
def test_a_bad_inference_setting_fails_before_the_weights_load(tmp_path, monkeypatch):
    from twossp import pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    spec = run_spec(
        "model=stories260k",
        "method=dense",
        "eval.inference=true",
        "eval.inference_settings.new_tokens=500",
        f"paths.results_dir={tmp_path}",
    )
    with pytest.raises(ValueError, match="exceeds the model's context of 512"):
        pipeline.run(spec)
