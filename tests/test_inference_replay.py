"""bench/inference_replay.py: a finished sweep rebuilt and timed in rounds of seeded shuffled
order (the warm-up round not counted), speed-ups as geometric means with a t interval over
rounds, eager and compiled columns side by side, re-rendered from its JSON."""

from __future__ import annotations

import json
import math
import random

import pytest

from bench import inference_replay as replay
from tests.conftest import needs_shared, run_spec
from twossp.evaluation.perplexity import t_quantile


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Dense and 2SSP at 37.5% on stories260K, finished, with no timing rows of their own."""
    from twossp.pipeline import run

    results = tmp_path_factory.mktemp("replay") / "results"
    common = [
        "model=stories260k",
        "eval.use=[wikitext2]",
        "eval.max_windows=1",
        "eval.inference=false",
        f"paths.results_dir={results}",
        "progress=false",
        "calib.n_samples=2",
        "experiment_name=replay_test",
    ]
    for method in ("dense", "twossp"):
        run(run_spec(*common, f"method={method}", "sparsity=0.375"))
    return results


def _replay(results, out, *extra: str) -> dict:
    replay.main(
        ["--results", str(results), "--experiment", "replay_test", "--model", "stories260k",
         "--rebuild", "", "--rounds", "2", "--new-tokens", "4", "--out", str(out), *extra]
    )  # fmt: skip
    return json.loads((out / "inference_replay.json").read_text())


@needs_shared()
def test_replay_rebuilds_and_times_a_finished_sweep_eagerly(sweep, tmp_path):
    """Plans replayed, parameter counts checked, the warm-up round not counted, every round's
    order recorded, the table re-rendered from the JSON."""
    out = tmp_path / "replay"
    data = _replay(sweep, out, "--mode", "eager")
    models = {m["method"]: m for m in data["models"]}
    assert set(models) == {"dense", "twossp"}
    assert all(len(m["prefill_s"]) == 2 and len(m["decode_tps"]) == 2 for m in models.values())
    assert all(m["compiled_prefill_s"] == [] and m["compile_s"] is None for m in models.values())
    assert models["twossp"]["kv_bytes"] < models["dense"]["kv_bytes"]
    assert models["twossp"]["flops"] < models["dense"]["flops"]
    meta = data["meta"]
    assert meta["modes"] == ["eager"] and meta["rounds"] == 2 and meta["seed"] == 0
    assert [sorted(o) for o in meta["orders"]] == [["dense:eager", "twossp 0.375:eager"]] * 2
    table = (out / "inference_replay.md").read_text()
    assert "| dense | 0.000 (0.000) |" in table and "| twossp | 0.375 (0.375) |" in table
    assert "compiled" not in table.split("\n\n")[1]  # no compiled columns
    assert "shuffled with seed 0" in table and "not between machines" in table
    (out / "inference_replay.md").unlink()
    replay.main(["--experiment", "replay_test", "--out", str(out), "--render"])
    assert (out / "inference_replay.md").read_text() == table  # re-rendered from the JSON


@pytest.mark.slow
@needs_shared()
def test_replay_compiled_mode_beside_eager(sweep, tmp_path):
    """``--mode both``: compiled decoders agree with eager decoding, compile time is reported
    apart, and both modes' speed-ups sit side by side."""
    data = _replay(sweep, tmp_path / "replay", "--mode", "both")
    for m in data["models"]:
        assert m["compiled_matches_eager"] is True and m["compile_s"] > 0
        assert len(m["compiled_prefill_s"]) == len(m["compiled_decode_tps"]) == 2
        assert len(m["prefill_s"]) == 2
    assert all(len(o) == 4 for o in data["meta"]["orders"])  # 2 models x 2 modes
    head = (tmp_path / "replay" / "inference_replay.md").read_text().split("\n\n")[1]
    columns = head.splitlines()[0].strip("| ").split(" | ")
    assert columns[3:8] == [
        "FLOP ratio",
        "prefill speed-up eager",
        "prefill speed-up compiled",
        "decode speed-up eager",
        "decode speed-up compiled",
    ]
    assert "prefill ms (eager/compiled)" in columns and "compile s" in columns


class _Fake:
    def __init__(self, label: str):
        self.label, self.method = label, label


def test_every_round_draws_its_order_from_the_seed(monkeypatch):
    monkeypatch.setattr(replay, "measure", lambda *a: None)
    entries = [_Fake(name) for name in ("dense", "a", "b", "c")]

    def orders(seed):
        rng = random.Random(seed)
        return [replay.measure_round(entries, None, 4, ["eager"], rng) for _ in range(10)]

    first = orders(0)
    assert first == orders(0) != orders(1)
    assert {o[0] for o in first} != {"dense:eager"}  # dense is not always first
    assert all(sorted(o) == sorted(f"{e.label}:eager" for e in entries) for o in first)


def test_geometric_interval_is_the_t_interval_of_the_log_ratios():
    mean, low, high = replay.geometric_interval([2.0, 8.0])
    t = t_quantile(0.975, 1)  # stdev of (ln 2, ln 8) / sqrt(2) = ln 2
    assert mean == pytest.approx(4.0)
    assert low == pytest.approx(4.0 * 2**-t) and high == pytest.approx(4.0 * 2**t)
    assert replay.geometric_interval([1.5]) == (pytest.approx(1.5), None, None)
    assert replay.geometric_interval([1.2] * 5) == pytest.approx((1.2, 1.2, 1.2))


def test_speedups_are_per_round_ratios_to_dense():
    def entry(method, prefill, decode):
        e = replay.Entry(method, 0.375, "h", 0.375, 10**6, None, (None, None))
        e.prefill_s, e.decode_tps, e.flops, e.kv_bytes = prefill, decode, 1.0, 1
        return e

    dense = entry("dense", [1.0, 2.0, 4.0], [10.0, 10.0, 10.0])
    pruned = entry("twossp", [0.5, 1.0, 2.0], [20.0, 10.0, 40.0])
    assert replay.ratios([dense, pruned], pruned, "prefill_s", invert=False) == [2.0, 2.0, 2.0]
    assert replay.ratios([dense, pruned], pruned, "decode_tps", invert=True) == [2.0, 1.0, 4.0]
    cell = replay._speedup([dense, pruned], pruned, "decode_tps", invert=True)
    mean, low, high = replay.geometric_interval([2.0, 1.0, 4.0])
    assert cell == f"{mean:.2f} [{low:.2f}, {high:.2f}]" and math.isclose(mean, 2.0)


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit):
        replay.main(["--experiment", "x", "--out", str(tmp_path), "--rounds", "0"])
    with pytest.raises(SystemExit):
        replay.main(["--experiment", "x", "--out", str(tmp_path), "--mode", "fast"])
    with pytest.raises(SystemExit, match="new-tokens must be >= 2"):
        replay.main(["--experiment", "x", "--out", str(tmp_path), "--new-tokens", "1"])


@needs_shared()
def test_slicegpt_rebuilt_from_fewer_windows_keeps_the_runs_shapes(tmp_path):
    """``--rotation-windows``: SliceGPT, whose plan holds no rotations, is pruned again from
    only its first windows; its widths (checked through the parameter count) are the run's,
    and the caption says what differs."""
    from twossp.pipeline import run

    results = tmp_path / "results"
    common = ["model=stories260k", "eval.use=[wikitext2]", "eval.max_windows=1",
              f"paths.results_dir={results}", "progress=false", "calib.n_samples=4",
              "experiment_name=replay_test", "sparsity=0.375"]  # fmt: skip
    for method in ("dense", "slicegpt"):
        run(run_spec(*common, f"method={method}"))
    data = _replay(results, tmp_path / "out", "--mode", "eager", "--rotation-windows", "1")
    models = {m["method"]: m for m in data["models"]}
    assert models["slicegpt"]["flops"] < models["dense"]["flops"]
    assert data["meta"]["rotation_windows"] == 1
    table = (tmp_path / "out" / "inference_replay.md").read_text()
    assert "rebuilt for timing from its first 1 calibration windows" in table


def _entry(method, flops, scale):
    """A replay entry whose eager and compiled times are the dense ones divided by ``scale``
    (eager, compiled) in every round, up to a round-to-round wobble."""
    wobble = [1.0, 1.01, 0.99, 1.02]
    eager, compiled = scale
    return replay.Entry(
        method=method, sparsity=0.0 if method == "dense" else 0.375, config_hash=method,
        achieved=0.0, params=1, ppl=None, ppl_interval=(None, None), flops=flops, kv_bytes=1,
        prefill_s=[w / eager for w in wobble], decode_tps=[eager * w for w in wobble],
        compiled_prefill_s=[w / compiled for w in wobble],
        compiled_decode_tps=[compiled * w for w in wobble],
    )  # fmt: skip


def test_the_overhead_table_pairs_the_modes_by_round_and_gives_a_share_only_past_noise():
    meta = {"modes": ["eager", "compiled"]}
    entries = [
        _entry("dense", 140.0, (1.0, 1.0)),
        _entry("twossp", 100.0, (1.2, 1.3)),  # FLOP ratio 1.40: shortfall 14.3% -> 7.1%
        _entry("shortgpt", 100.0, (1.4, 1.4)),  # compiling changes nothing
    ]
    text = replay.overhead_table(entries, meta)
    rows = {tuple(r.split(" | ")[:2]): r for r in text.splitlines() if r.startswith("| ")}
    twossp = rows[("| twossp", "prefill")]
    assert "| 1.40 | 1.20 | 1.30 | 1.083 [1.083, 1.083] | 14.3% | 7.1% | 50% |" in twossp
    assert rows[("| shortgpt", "decode")].endswith("| not told apart from noise |")
    assert replay.overhead_table(entries, {"modes": ["eager"]}) == ""
