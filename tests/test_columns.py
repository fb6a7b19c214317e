"""The column reference (docs/columns.md) is current and covers every column of a real run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import needs_shared, run_spec
from twossp import columns
from twossp.items import ITEM_COLUMNS, items_path, read_items
from twossp.results import read_run


def test_the_page_is_written_from_the_schema():
    assert columns.PAGE.read_text() == columns.render(), "run: python -m twossp.columns"


def _documented() -> set[str]:
    return {row[0] for row in columns.RUN_COLUMNS + columns.METRIC_COLUMNS}


@needs_shared()
@pytest.mark.shared
@pytest.mark.slow
def test_every_column_and_variant_key_of_a_real_run_is_documented(tmp_path):
    from twossp.pipeline import run

    spec = run_spec(
        "model=stories260k",
        "method=twossp",
        "eval=downstream",
        "eval.downstream.tasks=[arc_easy]",
        "eval.downstream.limit=2",
        "eval.max_windows=2",
        "calib.n_samples=4",
        "eval.inference=true",
        "eval.inference_settings.repeats=1",
        "eval.inference_settings.decode_repeats=1",
        "eval.inference_settings.new_tokens=4",
        "progress=false",
        f"paths.results_dir={tmp_path}",
    )
    out = run(spec)
    frame = read_run(out.path)
    undocumented = [
        c for c in frame.columns if c not in _documented() and not c.startswith("method.")
    ]
    assert not undocumented
    keys = {k for v in frame.variant for k in json.loads(v)}
    assert keys - set(columns.VARIANT_KEYS) == set()
    assert {"window_nll", "stderr", "times_ms"} <= keys  # ppl, accuracy and timing rows ran
    items = read_items(items_path(tmp_path, spec.config_hash))
    assert list(items.columns) == ITEM_COLUMNS and set(items.kind) == {"window", "document"}
