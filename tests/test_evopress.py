"""EvoPress: search operators, KL fitness, an oracle, every family, and stories260K."""

from __future__ import annotations

import copy
import logging
import math
import random
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from baselines.evopress import (
    EvoPress,
    KLFitness,
    default_generations,
    mutate,
    random_genome,
    sample_windows,
)
from twossp import sparsity as sp
from twossp.adapters import get_adapter
from twossp.methods import PruneContext, build_method
from twossp.modeling import count_params
from twossp.plan import PrunePlan
from twossp.sparsity import UnreachableSparsityError
from twossp.surgery import apply_plan
from twossp.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]

# Small budgets keep the tiny-model tests fast; the search logic is the same.
SMALL = dict(offspring=8, initially_generated=8, tokens=(64, 128), initial_tokens=64)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snapshot) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(
        torch.equal(state[k], v) for k, v in snapshot.items()
    )


# --- operators ----------------------------------------------------------------------------
def test_generation_formula_matches_the_reference_scripts():
    # EvoPress's drop_search.sh: Mistral-7B (32 blocks) at 0.375 drops 12 -> 160 generations.
    assert default_generations(32, 12) == 160
    assert default_generations(5, 2) == 4 and default_generations(4, 1) == 2


def test_mutation_swaps_within_a_kind_and_keeps_counts():
    rng = random.Random(0)
    changed = 0
    for _ in range(200):
        parent = random_genome(rng, 8, 3)
        child = mutate(rng, parent, 8, max_mutations=3)
        assert len(child[0]) == len(child[1]) == 3
        assert all(list(c) == sorted(set(c)) and all(0 <= i < 8 for i in c) for c in child)
        # at most 3 swaps, each moving one index out and one in (two may cancel; the search
        # discards offspring equal to a parent)
        moved = len(set(child[0]) - set(parent[0])) + len(set(child[1]) - set(parent[1]))
        assert moved <= 3
        changed += child != parent
    assert changed > 180


def test_windows_hold_exactly_the_budget():
    rng = random.Random(1)
    for tokens in (2, 31, 32, 70, 128):
        windows = sample_windows(rng, 4, 32, tokens)
        assert sum(t for _, t in windows) == tokens
        assert len({w for w, _ in windows}) == len(windows)
        assert all(0 < t <= 32 for _, t in windows)
        assert sum(t < 32 for _, t in windows) <= 1  # at most one window is cut


# --- fitness ------------------------------------------------------------------------------
def test_kl_of_the_dense_configuration_is_zero(calib):
    model = tiny_model("llama")
    fitness = KLFitness(get_adapter(model), calib, progress=False)
    windows = sample_windows(random.Random(0), 4, 32, 4 * 32)
    assert fitness(((), ()), windows) == 0.0
    dropped = fitness(((1,), (2,)), windows)
    assert dropped > 0 and math.isfinite(dropped)


def test_kl_equals_kl_of_the_pruned_model(calib):
    model = tiny_model("qwen2")
    fitness = KLFitness(get_adapter(model), calib, progress=False)
    genome = ((0, 3), (1, 3))
    windows = ((0, 32), (2, 20))
    dense = model(input_ids=calib).logits.float().log_softmax(-1)
    pruned = copy.deepcopy(model)
    apply_plan(pruned, PrunePlan(attention=list(genome[0]), mlp=list(genome[1])))
    logq = pruned(input_ids=calib).logits.float().log_softmax(-1)
    terms = [
        (dense[w, : t - 1].exp() * (dense[w, : t - 1] - logq[w, : t - 1])).sum() for w, t in windows
    ]
    expected = float(sum(terms)) / (31 + 19)
    assert fitness(genome, windows) == pytest.approx(expected, rel=1e-4)


# --- the search on every family -----------------------------------------------------------
def test_end_to_end_on_tiny(family, calib):
    model = tiny_model(family, n_blocks=4)
    method = build_method("evopress", **SMALL)
    s = 0.375  # k = ceil(1.5) = 2 attention and 2 MLP submodules of 4 blocks
    before, before_total = sp.count(model), count_params(model)
    snapshot = _snapshot(model)
    plan = method.plan(model, PruneContext(s, calib, seed=3, progress=False))
    assert _same(model, snapshot), "plan() changed the model"
    assert method.plan(model, PruneContext(s, calib, seed=3, progress=False)) == plan
    assert len(plan.attention) == len(plan.mlp) == plan.info["target_units_per_kind"] == 2
    assert plan.info["n_attention_removed"] == plan.info["n_mlp_removed"] == 2

    method.prune(model, PruneContext(s, calib, seed=3, progress=False))
    achieved = sp.measure(before, sp.count(model))
    # about k/N = 0.5 (Phi keeps its shared norm unless a whole block goes)
    assert abs(achieved - 0.5) < 0.01
    assert s - 0.01 <= achieved < s + 1 / 4 + 0.01
    assert count_params(model) < before_total
    logits = model(input_ids=calib[:1]).logits
    assert torch.isfinite(logits).all()
    out = model.generate(calib[:1, :6], max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 11)


def test_search_never_gets_worse_than_its_initial_best(calib):
    # Budgets cover all calibration tokens, so every step scores on the same data and the
    # elitist search is monotone.
    model = tiny_model("mistral", n_blocks=6)
    method = EvoPress(offspring=6, initially_generated=4, tokens=(128, 128), generations=6)
    plan = method.plan(model, PruneContext(0.5, calib, seed=0, progress=False))
    history = plan.info["fitness_history"]
    assert len(history) == 7 and plan.info["generations"] == 6
    assert plan.info["best_fitness"] <= plan.info["initial_fitness"]
    assert all(b <= a for a, b in pairwise(history))
    fitness = KLFitness(get_adapter(model), calib, progress=False)
    genome = (tuple(plan.attention), tuple(plan.mlp))
    assert fitness(genome, tuple((w, 32) for w in range(4))) == plan.info["best_fitness"]


def test_seed_fixes_the_result_and_the_rng_is_private(calib):
    model = tiny_model("llama", n_blocks=6)
    method = EvoPress(**SMALL)
    torch.manual_seed(0)
    random.seed(0)
    a = method.plan(model, PruneContext(0.5, calib, seed=7, progress=False))
    torch.manual_seed(123)
    random.seed(123)
    b = method.plan(model, PruneContext(0.5, calib, seed=7, progress=False))
    assert (a.attention, a.mlp, a.info) == (b.attention, b.mlp, b.info)
    other = method.plan(model, PruneContext(0.5, calib, seed=8, progress=False))
    assert len(other.attention) == len(other.mlp) == 3  # may or may not differ from seed 7


def _silence(model, attention: list[int], mlp: list[int]) -> None:
    """Zero the output projections so those submodules add exactly nothing."""
    adapter = get_adapter(model)
    outs = [adapter.ffn_out_proj(i) for i in mlp]
    for i in attention:
        attn = adapter.attention(i)
        outs.append(attn.o_proj if hasattr(attn, "o_proj") else attn.dense)
    with torch.no_grad():
        for linear in outs:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_oracle_finds_the_silent_submodules(family, calib):
    model = tiny_model(family, n_blocks=6)
    _silence(model, attention=[1, 4], mlp=[2, 4])
    method = EvoPress(offspring=16, initially_generated=16, tokens=(64, 128), generations=20)
    plan = method.plan(model, PruneContext(1 / 3, calib, seed=0, progress=False))  # k = 2
    assert (plan.attention, plan.mlp) == ([1, 4], [2, 4])
    assert plan.info["best_fitness"] == 0.0


# --- settings, budgets, config ------------------------------------------------------------
def test_unreachable_target_and_bad_settings_fail_before_work():
    model = tiny_model("llama", n_blocks=4)
    with pytest.raises(UnreachableSparsityError, match="all 4 units"):
        EvoPress().check(model, 0.8)
    with pytest.raises(ValueError, match="same length"):
        EvoPress(survivors=(2, 1), tokens=(2048,)).check(model, 0.25)
    with pytest.raises(ValueError, match="offspring must be >= 1"):
        EvoPress(offspring=0).check(model, 0.25)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        EvoPress().check(model, 1.5)


def test_budgets_beyond_the_calibration_are_capped_with_a_warning(calib, caplog):
    model = tiny_model("llama")
    method = EvoPress(**{**SMALL, "tokens": (64, 10_000)}, max_generations=1)
    with caplog.at_level(logging.WARNING, logger="baselines.evopress"):
        plan = method.plan(model, PruneContext(0.25, calib, progress=False))
    assert "10000 tokens exceeds the 128 calibration tokens" in caplog.text
    assert plan.info["generations"] == 1  # capped from int(1 * 3 / 1.5) = 2


# --- the real model -----------------------------------------------------------------------
@pytest.mark.shared
def test_stories260k_at_0375(stories_path):
    from twossp.data import CalibrationSpec, TextDataset, calibration_samples
    from twossp.modeling import ModelSpec, load_model

    model, tok = load_model(ModelSpec(str(stories_path), device="cpu"))
    c4 = stories_path.parents[1] / "text" / "c4_train_1000.jsonl"
    ds = TextDataset("c4", local_path=str(c4), split="train")
    calib = calibration_samples(tok, CalibrationSpec(ds, 8, 256, 0))
    before = sp.count(model)
    plan = build_method("evopress").prune(model, PruneContext(0.375, calib, progress=False))
    # k = ceil(0.375 * 5) = 2 attention and 2 MLP submodules -> 2/5 of the block parameters
    assert len(plan.attention) == len(plan.mlp) == 2
    assert sp.measure(before, sp.count(model)) == pytest.approx(0.4, abs=1e-9)
    assert plan.info["generations"] == 4
    assert 0 < plan.info["best_fitness"] <= plan.info["initial_fitness"]
    ids = calib[:1]
    assert torch.isfinite(model(input_ids=ids).logits).all()
