"""Each method reads the calibration windows it uses, and the config hash covers just those.

A corpus with fewer complete windows than a method reads runs on those it holds (one line,
recorded), unless the method cannot work with so few (refused before the weights load);
settings that make the same computation share a config hash and are recorded as read.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import ASSETS, TEXT, needs_shared, run_spec
from twossp import pipeline
from twossp.data import CalibrationSpec, TextDataset, calibration_samples
from twossp.methods import build_method
from twossp.methods.registry import method_names
from twossp.modeling import load_tokenizer

pytestmark = needs_shared()

SMOLLM2 = ASSETS / "models" / "SmolLM2-135M-Instruct-Q4_1"
# Hashes of the default configurations before the hash followed what methods read
# (measured on this tree before the change): they must not move.
DEFAULT_HASHES = {"twossp": "a8ae52be8b6818c2", "shortgpt": "9d7f40d103b31b4b"}


def _spec(tmp_path, *overrides):
    return run_spec(f"paths.results_dir={tmp_path}", "progress=false", "sparsity=0.375", *overrides)


def _hash(*overrides) -> str:
    return run_spec("sparsity=0.375", *overrides).config_hash


@pytest.fixture
def no_weights(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(pipeline, "load_model", refuse)


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory):
    """The first C4 train documents, enough for a few windows of 512 stories260K tokens."""
    path = tmp_path_factory.mktemp("corpus") / "c4_short.jsonl"
    lines = (TEXT / "c4_train_1000.jsonl").read_text().splitlines()[:6]
    path.write_text("\n".join(lines) + "\n")
    spec = run_spec()
    docs = [json.loads(line)["text"] for line in lines]
    ids = load_tokenizer(spec.model)("\n\n".join(docs), add_special_tokens=False).input_ids
    windows = len(ids) // 512
    assert 3 <= windows < 32  # fewer than any method reads by default, enough for 2SSP
    return str(path), windows


def _on(corpus: str, *overrides: str) -> tuple[str, ...]:
    return (f"calib.dataset.local_path={corpus}", "calib.seqlen=512", *overrides)


# --- the hash follows what is read -----------------------------------------------------------


def test_default_configurations_keep_their_hash():
    for method, expected in DEFAULT_HASHES.items():
        assert _hash(f"method={method}") == expected


@pytest.mark.parametrize(
    "one, other",
    [
        (["method=twossp", "calib.n_samples=32"], ["method=twossp", "calib.n_samples=256"]),
        (["method.n_calib_stage1=100000"], ["method.n_calib_stage1=256"]),
        (["calib.n_samples=16"], ["method.n_calib_stage1=16"]),
        (["method=shortgpt", "method.n_calib=256"], ["method=shortgpt"]),
        (["method=slicegpt", "method.n_calib=1000"], ["method=slicegpt"]),
        (["method=blockpruner", "calib.n_samples=8"], ["method=blockpruner"]),
        (["method=evopress", "calib.n_samples=8", "calib.seqlen=64"], ["method=evopress"]),
    ],
)
def test_settings_that_make_the_same_computation_share_a_hash(one, other):
    assert _hash(*one) == _hash(*other)


@pytest.mark.parametrize(
    "one, other",
    [
        (["calib.n_samples=16"], []),  # 2SSP reads 16 windows, not 32
        (["method.n_calib_stage1=64"], []),
        (["method=shortgpt", "calib.n_samples=128"], ["method=shortgpt"]),
        (["method=shortgpt", "method.n_calib=128"], ["method=shortgpt"]),
        (["method=evopress", "method.pool=run", "calib.n_samples=8"], ["method=evopress"]),
    ],
)
def test_a_different_computation_has_another_hash(one, other):
    assert _hash(*one) != _hash(*other)


def test_a_count_beyond_n_samples_is_recorded_as_read(tmp_path):
    outcome = pipeline.run(
        _spec(
            tmp_path,
            "method.n_calib_stage1=100000",
            "calib.n_samples=4",
            "calib.seqlen=512",
            "eval.use=[wikitext2]",
            "eval.max_windows=1",
        )
    )
    row = outcome.frame.iloc[0]
    assert row["method.n_calib_stage1"] == 4
    assert row["calib_windows"] == 4 and row["calib_n_samples"] == 4
    assert outcome.plan.info["n_calib_stage1"] == 4


# --- a corpus with fewer windows -------------------------------------------------------------


def test_the_corpus_gives_the_complete_windows_it_holds():
    ds = TextDataset("t", local_path=str(TEXT / "c4_train_1000.jsonl"), max_docs=6)
    spec = run_spec()
    tok = load_tokenizer(spec.model)
    got = calibration_samples(tok, CalibrationSpec(ds, n_samples=1000, seqlen=512))
    fewer = calibration_samples(tok, CalibrationSpec(ds, n_samples=2, seqlen=512))
    assert 3 <= len(got) < 1000 and got.shape[1] == 512
    assert fewer.tolist() == got[:2].tolist()  # the same first windows, however many asked
    none = calibration_samples(tok, CalibrationSpec(ds, n_samples=4, seqlen=10**7))
    assert tuple(none.shape) == (0, 10**7)


def test_fewer_windows_are_used_said_once_and_recorded(tmp_path, short_corpus, caplog):
    corpus, windows = short_corpus
    spec = _spec(
        tmp_path,
        *_on(corpus, "method=twossp", "eval.use=[wikitext2]", "eval.max_windows=1"),
    )
    with caplog.at_level(logging.INFO):
        outcome = pipeline.run(spec)
    lines = [r.getMessage() for r in caplog.records if "complete calibration windows" in r.message]
    assert lines == [
        f"c4_train (stream packing) holds {windows} complete calibration windows of 512 tokens, "
        f"fewer than the 32 twossp reads; using those {windows} (recorded as calib_windows)"
    ]
    row = outcome.frame.iloc[0]
    assert row["calib_windows"] == windows and row["calib_n_samples"] == 32
    assert row["method.n_calib_stage1"] == windows
    assert outcome.plan.info["n_calib_stage1"] == windows


def test_a_method_reading_every_window_runs_on_those_there_are(tmp_path, short_corpus):
    corpus, windows = short_corpus
    ready = pipeline.prepare(_spec(tmp_path, *_on(corpus, "method=shortgpt")))
    assert len(ready.calibration) == windows and ready.calib.n_samples == 256
    assert ready.method.n_calib is None  # all of them


# --- refusals ---------------------------------------------------------------------------------


def test_too_few_windows_for_stage_2_is_refused_before_loading(tmp_path, short_corpus, no_weights):
    corpus, windows = short_corpus
    spec = _spec(
        tmp_path, *_on(corpus, f"method.n_calib_stage2={windows + 1}", "method.n_calib_stage1=64")
    )
    with pytest.raises(ValueError, match=rf"needs method.n_calib_stage2={windows + 1}: lower"):
        pipeline.run(spec)


def test_no_complete_window_is_refused_before_loading(tmp_path, short_corpus, no_weights):
    corpus, _ = short_corpus
    spec = _spec(tmp_path, *_on(corpus, "method=shortgpt", "calib.dataset.max_docs=1"))
    with pytest.raises(
        ValueError, match="holds 0 complete .* needs at least 1: lower calib.seqlen"
    ):
        pipeline.run(spec)


def test_a_stage_2_count_beyond_n_samples_is_refused_before_the_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    spec = _spec(tmp_path, "method.n_calib_stage1=64", "method.n_calib_stage2=64")
    spec.calib.n_samples = 8
    with pytest.raises(ValueError, match="method.n_calib_stage2=64 .* calib.n_samples is 8"):
        pipeline.prepare(spec)


def test_reading_clips_only_counts():
    method = build_method("twossp", n_calib_stage1=100, n_calib_stage2=2, alpha=2.0)
    assert method.reading(40) == build_method(
        "twossp", n_calib_stage1=40, n_calib_stage2=2, alpha=2.0
    )
    assert build_method("shortgpt", n_calib=300).reading(256).n_calib is None
    assert build_method("shortgpt", n_calib=3).reading(256).n_calib == 3
    assert build_method("blockpruner", n_calib=5).reading(2).n_calib == 2


# --- SmolLM2: every method gets through prepare under both protocols --------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.exists(), reason=f"SmolLM2 GGUF not found at {SMOLLM2}")
@pytest.mark.parametrize("protocol", ["paper", "matched"])
@pytest.mark.parametrize("method", method_names())
def test_every_method_prepares_on_smollm2(tmp_path, method, protocol, no_weights):
    spec = _spec(tmp_path, "model=smollm2_135m", f"method={method}", f"protocol={protocol}")
    ready = pipeline.prepare(spec)
    if method == "dense":
        assert ready.calibration.numel() == 0
        return
    assert 1 <= len(ready.calibration) <= ready.calib.n_samples
    read = ready.method.calibration_windows()
    assert read is None or read == len(ready.calibration)
