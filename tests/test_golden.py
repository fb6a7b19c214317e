"""Golden numbers: what the harness measures on stories260K under protocol=paper, pinned.

The default configuration as a user runs it (`python experiments/run.py method=dense` and
`method=twossp sparsity=0.375`, `protocol=paper`): calibration from the first 1,000 C4 train
documents in file order (256 windows of 512 tokens, the model's context; 2SSP reads the first
32 and scores the first one in stage 2), perplexity on the first 32 windows of 512 tokens of
each corpus (`eval.max_windows=32 eval.window_sample=first`, to keep CI fast; the uncapped
streams give dense 120.385 / 53.652 / 126.778 and 2SSP 226.720 / 126.475 / 198.777, measured
in an earlier round, docs/archive). A change that picks other
neurons or blocks, tokenizes other streams or scores differently fails here. The values were
measured by this harness (CPU, float32, torch 2.13, transformers 5.24); the tolerance allows
for float32 reduction order across machines, not for a different choice.
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_shared, run_spec
from twossp.pipeline import run
from twossp.plan import PrunePlan
from twossp.results import plan_path

pytestmark = [needs_shared(), pytest.mark.shared, pytest.mark.slow]

DENSE_PPL = {"wikitext2": 113.44900730927984, "c4": 42.63957076885394, "ptb": 118.19675983141772}
TWOSSP_PPL = {"wikitext2": 231.28576868695512, "c4": 115.5210441868828, "ptb": 198.17671428470513}
TWOSSP_ATTENTION = [0]  # removed attention submodules (stage 2)
TWOSSP_FFN_KEEP = 96  # of 172 neurons per block (stage 1)
RTOL = 1e-4


def _run(tmp_path, *overrides):
    spec = run_spec(
        f"paths.results_dir={tmp_path}",
        "progress=false",
        "eval.max_windows=32",
        "eval.window_sample=first",  # the windows these numbers were measured on
        *overrides,
    )
    assert spec.protocol == "paper"
    outcome = run(spec)
    ppl = outcome.frame.query("metric == 'ppl'").set_index("dataset")["value"].to_dict()
    return spec, outcome, ppl


def test_dense_perplexity(tmp_path):
    _, outcome, ppl = _run(tmp_path, "method=dense")
    assert ppl == pytest.approx(DENSE_PPL, rel=RTOL)
    variants = outcome.frame.query("metric == 'ppl'")["variant"]
    assert variants.str.contains('"windows": 32,').all()
    assert variants.str.contains('"special_tokens": false').all()  # the authors' streams


def test_twossp_at_37_5(tmp_path):
    spec, outcome, ppl = _run(tmp_path, "method=twossp", "sparsity=0.375")
    plan = PrunePlan.load(plan_path(tmp_path, spec.config_hash))
    assert plan.attention == TWOSSP_ATTENTION
    assert {len(keep) for keep in plan.ffn_keep.values()} == {TWOSSP_FFN_KEEP}
    assert plan.info["n_calib_stage1"] == 32 and plan.info["stage2_tokens"] == 512
    assert ppl == pytest.approx(TWOSSP_PPL, rel=RTOL)
    row = outcome.frame.iloc[0]
    assert row["achieved_sparsity"] == pytest.approx(0.3755, abs=5e-5)
