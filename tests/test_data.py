"""The hub path of every configured corpus, run against local folders laid out like the hub.

Nothing here downloads: ``datasets.load_dataset`` accepts a local folder where it takes a
repo id, so each shipped config's ``load_dataset`` arguments (files inside the repo, split,
field) are exercised on a folder holding those files under the same names.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.test_config import _compose
from twossp.config import to_run_spec
from twossp.data import TextDataset, _read_hub


def _configured() -> dict[str, TextDataset]:
    spec = to_run_spec(_compose("eval.use=[wikitext2,c4,ptb,fineweb_edu]"))
    return {"calib": spec.calib.dataset, **{d.name: d for d in spec.eval.datasets}}


def _mirror(ds: TextDataset, root: Path, docs: list[str]) -> None:
    """Write ``docs`` where ``ds.data_files`` points inside a repo at ``root``."""
    target = root / ds.data_files
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.endswith(".json.gz"):
        with gzip.open(target, "wt") as f:
            f.writelines(json.dumps({ds.field: d, "url": "x"}) + "\n" for d in docs)
    elif target.suffix == ".parquet":
        pd.DataFrame({ds.field: docs}).to_parquet(target)
    else:
        raise AssertionError(f"no mirror writer for {target.name}")


@pytest.mark.parametrize("key", ["calib", "c4", "ptb"])
def test_hub_files_load_as_the_configured_split(key, tmp_path):
    ds = _configured()[key]
    assert ds.data_files, f"{key} is expected to name files inside its hub repo"
    docs = [f"document {i} of {key}" for i in range(7)]
    _mirror(ds, tmp_path, docs)
    local = dataclasses.replace(ds, hub_path=str(tmp_path), revision=None, local_path=None)
    got = _read_hub(local)
    assert got == docs[: ds.max_docs or len(docs)]


def test_paper_streams_join_tokenize_and_cut_as_the_authors_code(tmp_path):
    """A stream is the documents joined by "\n\n", tokenized once without special tokens;
    calibration windows are its consecutive slices (file order for seed 0)."""
    from twossp.data import CalibrationSpec, calibration_samples, token_stream

    class Chars:  # a tokenizer that maps each character to its code point
        name_or_path = "chars"

        def __call__(self, text, return_tensors=None, add_special_tokens=True, verbose=True):
            import torch

            ids = ([1] if add_special_tokens else []) + [ord(c) for c in text]
            return type("Out", (), {"input_ids": torch.tensor([ids])})()

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("ab", "cde", "fgh")))
    ds = TextDataset("t", local_path=str(path))
    ids, variant = token_stream(Chars(), ds, 2)
    assert "".join(map(chr, ids.tolist())) == "ab\n\ncde\n\nfgh"  # no BOS
    assert variant["special_tokens"] is False
    windows = calibration_samples(Chars(), CalibrationSpec(ds, n_samples=3, seqlen=3, seed=0))
    assert ["".join(map(chr, w)) for w in windows.tolist()] == ["ab\n", "\ncd", "e\n\n"]
    shuffled = calibration_samples(Chars(), CalibrationSpec(ds, n_samples=1, seqlen=3, seed=1))
    assert shuffled.tolist() != windows[:1].tolist()  # a non-zero seed shuffles the documents
    packed = calibration_samples(
        Chars(), CalibrationSpec(ds, n_samples=2, seqlen=3, seed=0, packing="documents")
    )  # EvoPress: "ab\n\n" is short, "ab\n\ncde" gives "ab\n" (the rest dropped), "fgh"
    assert ["".join(map(chr, w)) for w in packed.tolist()] == ["ab\n", "fgh"]


def test_a_local_corpus_is_recorded_by_name_and_contents_not_by_path(tmp_path):
    """A run record's variant names a local copy by file name and content fingerprint: no
    path of this machine, and the same file elsewhere records alike."""
    from twossp.data import token_stream

    class Chars:
        name_or_path = "chars"

        def __call__(self, text, return_tensors=None, add_special_tokens=True, verbose=True):
            import torch

            return type("Out", (), {"input_ids": torch.tensor([[ord(c) for c in text]])})()

    sources = []
    for folder in ("a", "b"):
        path = tmp_path / folder / "wiki.txt"
        path.parent.mkdir()
        path.write_text("first line\nsecond line\n")
        _, variant = token_stream(Chars(), TextDataset("w", local_path=str(path)), 2)
        sources.append(variant["source"])
    assert sources[0] == sources[1] and sources[0].startswith("local:wiki.txt@")
    assert str(tmp_path) not in sources[0]
    (tmp_path / "b" / "wiki.txt").write_text("other text\n")
    changed = TextDataset("w", local_path=str(tmp_path / "b" / "wiki.txt"))
    assert changed.recorded_source() != sources[0]
