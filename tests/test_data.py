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

from experiments.run import to_run_spec
from tests.test_config import _compose
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


def test_configured_hub_sources():
    got = _configured()
    # C4 validation: the first 1,100 docs of shard 0; PTB from the parquet export (the
    # script repo cannot run on datasets >= 4); FineWeb-Edu streams.
    assert got["c4"].data_files.startswith("en/c4-validation.00000-of-")
    assert got["c4"].split == "validation" and got["c4"].max_docs == 1100
    assert (
        got["calib"].data_files.startswith("en/c4-train.00000-of-")
        and got["calib"].split == "train"
    )
    assert got["ptb"].revision == "refs/convert/parquet" and got["ptb"].field == "sentence"
    assert got["fineweb_edu"].streaming
