"""Greedy decoding over a static KV cache with a compiled step (``StaticGreedy``) generates
exactly what eager ``generate`` does: dense, 2SSP without some attention modules, no
attention at all, and SliceGPT's shortcut blocks."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import needs_shared
from tests.test_method_contract import quick
from twossp.evaluation.inference import (
    StaticGreedy,
    compiled_forward,
    greedy_generate,
    greedy_reference,
)
from twossp.evaluation.kv_cache import kv_shape
from twossp.methods import PruneContext
from twossp.plan import PrunePlan
from twossp.surgery import apply_plan
from twossp.testing import tiny_model

PROMPT = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(2))
NEW = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _eager(model, prompt=PROMPT, n=NEW) -> list[int]:
    return greedy_generate(model, prompt, n).sequences[0].tolist()


def _static(model, compile: bool, prompt=PROMPT, n=NEW) -> list[int]:
    tokens, seconds = StaticGreedy(model, prompt.shape[1] + n, compile=compile).generate(prompt, n)
    assert seconds > 0
    return tokens[0].tolist()


@pytest.fixture(scope="module")
def stories_pair(stories_path):
    """(dense stories260K, the same pruned by 2SSP at 37.5%, at least one attention gone)."""
    from twossp.modeling import ModelSpec, load_model

    dense, _ = load_model(ModelSpec(str(stories_path), device="cpu"))
    dense.eval()
    pruned = copy.deepcopy(dense)
    calib = torch.randint(3, 512, (4, 64), generator=torch.Generator().manual_seed(0))
    quick("twossp").prune(pruned, PruneContext(0.375, calib, seed=0, progress=False))
    assert len(kv_shape(pruned).attention_blocks) < len(kv_shape(dense).attention_blocks)
    return dense, pruned


@needs_shared()
def test_static_cache_loop_matches_generate_on_stories(stories_pair):
    for model in stories_pair:
        assert _static(model, compile=False) == _eager(model)


def test_static_cache_loop_without_any_attention_and_with_the_first_removed():
    for removed in ([0, 2], [0, 1, 2, 3]):
        model = apply_plan(tiny_model("llama"), PrunePlan(attention=removed))
        reference = greedy_reference(model, PROMPT, NEW)[0].tolist()
        assert _static(model, compile=False) == reference == _eager(model)
    assert StaticGreedy(model, 20, compile=False).cache is None  # nothing left to cache


def test_static_cache_loop_on_slicegpt_shortcut_blocks():
    model = tiny_model("llama")
    calib = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    quick("slicegpt").prune(model, PruneContext(0.375, calib, seed=0, progress=False))
    assert _static(model, compile=False) == _eager(model)


def test_static_greedy_refuses_what_its_cache_cannot_hold():
    decoder = StaticGreedy(tiny_model("llama"), PROMPT.shape[1] + 2, compile=False)
    with pytest.raises(ValueError, match="holds 14 tokens"):
        decoder.generate(PROMPT, 3)


@pytest.mark.slow
@needs_shared()
def test_compiled_decode_and_prefill_match_eager_on_stories(stories_pair):
    """The compiled step (inductor) generates the eager tokens, dense and 2SSP alike; each
    model gets its own graph, and a second run reuses it (no recompile)."""
    import torch._dynamo

    torch._dynamo.reset()
    for model in stories_pair:
        decoder = StaticGreedy(model, PROMPT.shape[1] + NEW)
        first, _ = decoder.generate(PROMPT, NEW)
        with torch._dynamo.config.patch(error_on_recompile=True):
            again, _ = decoder.generate(PROMPT, NEW - 2)
        assert first[0].tolist() == _eager(model)
        assert again[0].tolist() == first[0, : PROMPT.shape[1] + NEW - 2].tolist()
        window = torch.randint(3, 512, (1, 32), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            eager = model(input_ids=window, use_cache=False).logits
            torch.testing.assert_close(compiled_forward(model)(window), eager, atol=1e-4, rtol=0)
