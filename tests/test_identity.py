"""The config hash: configurations that can give different numbers never share one, and the
same configuration always gets the same one (also across processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEXT, needs_shared, run_spec
from twossp.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _spec(*overrides, device_hint=None):
    return run_spec(*overrides, device_hint=device_hint)


def _tiny_folder(path: Path, seed: int = 0, blocks: int = 2) -> str:
    tiny_model("llama", n_blocks=blocks, seed=seed).save_pretrained(path)
    return str(path)


@needs_shared()
def test_another_model_at_the_default_key_gets_another_hash(tmp_path):
    base = _spec()
    other = _spec(f"model.name_or_path={_tiny_folder(tmp_path / 'other')}")
    assert other.model_key == base.model_key == "stories260k"
    assert other.config_hash != base.config_hash


def test_a_local_model_is_named_by_its_weights_not_its_path(tmp_path):
    a = _tiny_folder(tmp_path / "a")
    copy = shutil.copytree(a, tmp_path / "moved")
    b = _tiny_folder(tmp_path / "b", seed=1)  # same shapes, other weights
    hashes = [_spec(f"model.name_or_path={p}").config_hash for p in (a, copy, b)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_a_hub_model_under_a_config_key_is_named_by_its_id(tmp_path):
    seven = _spec("model=llama2_7b")
    thirteen = _spec("model=llama2_7b", "model.name_or_path=meta-llama/Llama-2-13b-hf")
    assert seven.model_key == thirteen.model_key
    assert seven.config_hash != thirteen.config_hash
    pinned = _spec("model=llama2_7b", "model.revision=01c7f73d771dfac7d292323805ebc428287df4f9")
    assert pinned.config_hash != seven.config_hash


@needs_shared()
def test_auto_dtype_is_hashed_as_resolved():
    cpu = _spec(device_hint="cpu")
    gpu = _spec(device_hint="cuda")  # auto -> bfloat16 on CUDA
    assert cpu.identity()["model"]["dtype"] == "float32"
    assert gpu.identity()["model"]["device"] == "cuda"
    assert cpu.config_hash != gpu.config_hash
    assert _spec("model.dtype=float32", device_hint="cpu").config_hash == cpu.config_hash


@needs_shared()
@pytest.mark.parametrize(
    "override",
    [
        "protocol=matched",
        "calib.seed=1",
        "calib.seqlen=256",
        "calib.n_samples=16",  # 2SSP reads 16 windows instead of 32
        "eval.seqlen=256",
        "eval.max_windows=4",
        "eval.use=[wikitext2]",
        "eval.datasets.c4.max_docs=100",
        "seed=1",
        "method.n_calib_stage1=16",
        "method.score_seqlen=64",
    ],
)
def test_every_setting_that_changes_numbers_changes_the_hash(override):
    assert _spec(override).config_hash != _spec().config_hash


@needs_shared()
def test_a_local_corpus_is_named_by_its_contents(tmp_path):
    copy = shutil.copy(TEXT / "ptb_test.txt", tmp_path / "ptb.txt")
    same = _spec(f"eval.datasets.ptb.local_path={copy}").config_hash
    assert same == _spec().config_hash
    Path(copy).write_text(Path(copy).read_text() + "one more sentence\n")
    assert _spec(f"eval.datasets.ptb.local_path={copy}").config_hash != same


@needs_shared()
def test_the_same_config_hashes_alike_in_another_process():
    """In a process with another string-hash seed (set and dict orders of str keys differ),
    the same configuration hashes alike and another one does not."""
    code = (
        "from tests.test_identity import _spec; "
        "print(*(_spec('method=blockpruner', f'sparsity={s}').config_hash for s in (0.25, 0.5)))"
    )
    seed = os.environ.get("PYTHONHASHSEED", "random")
    other_seed = str(int(seed) + 1) if seed.isdigit() else "1"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": other_seed},
    )
    same, other = out.stdout.strip().splitlines()[-1].split()
    assert same == _spec("method=blockpruner", "sparsity=0.25").config_hash
    assert other != same
