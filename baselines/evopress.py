"""EvoPress depth pruning (Sieberling, Kuznedelev, Kurtic, Alistarh, 2024; arXiv 2410.14649).

EvoPress searches, by a (1 + lambda) evolutionary algorithm, over which submodules to drop.
As in the 2SSP paper's comparison (and ``evo_drop_search.py`` of IST-DASLab/EvoPress), the
units are the attention and the MLP submodule of every block, dropped independently:

- **Budget.** For a target sparsity ``s`` on ``N`` blocks, ``k`` attention *and* ``k`` MLP
  submodules are removed, with ``k = ceil(s * N)`` (``rounding="up"``: the 2SSP authors' code
  rounds a target that is not a multiple of ``1/N`` up to the next one) or the nearest whole
  number (``rounding="nearest"``, ``protocol=matched``); see
  :func:`twossp.sparsity.blocks_for_sparsity`. Removing ``k`` of each costs about ``k``
  blocks' worth of parameters, so the achieved sparsity is ``~k/N``.
- **Calibration pool** (``pool="evopress"``, the 2SSP authors' setup): ``pool_tokens``
  (131072) tokens of C4 train in windows of ``pool_seqlen`` tokens (their code: 4096 for
  Llama and Phi-3, 2048 for Qwen2, 8192 otherwise; set per model in ``conf/model``, capped at
  the model's context), the documents in file order, packed one by one with "\\n\\n" between
  them and each window's overflow dropped (:class:`twossp.data.CalibrationSpec`,
  ``packing="documents"``). ``pool="run"`` uses the run's calibration windows instead.
- **Initialisation.** ``initially_generated`` (64) distinct random configurations, each
  dropping ``k`` attention and ``k`` MLP submodules uniformly at random; the best
  ``survivors[-1]`` (1) on ``initial_tokens`` (2048) calibration tokens form the population.
- **Mutation** (the paper's level switch for two levels, kept/removed): an offspring copies a
  random parent and applies ``min(U1, U2)`` swaps, ``U1, U2 ~ U{1..max_mutations}`` (3); each
  swap picks attention or MLP with equal chance, then drops one kept submodule of that kind and
  restores one dropped submodule of that kind, so both counts stay ``k``. ``offspring`` (32)
  distinct offspring, none equal to a parent, per generation.
- **Multi-step selection.** Offspring are scored on ``tokens[0]`` (2048) tokens and the best
  ``survivors[0]`` (2) kept; then on ``tokens[1]`` (32768) tokens, with the parents added back
  (elitism), and the best ``survivors[1]`` (1) becomes the next population. Each step draws a
  fresh set of calibration windows without replacement (the last one cut to fill the budget).
- **Fitness.** Mean per-token KL divergence ``KL(p_dense || p_candidate)`` of the next-token
  distributions over the drawn tokens (the last position of each window predicts nothing and
  is skipped); lower is better. The dense logits are computed once per calibration window.
- **Generations.** ``int(k * (N - k) / 1.5)`` with ``N`` blocks and ``k`` removed per kind, as
  in the EvoPress depth-pruning scripts and the 2SSP authors' code.

Deviations:
(1) The calibration pool is C4 train as in the 2SSP authors' code (the EvoPress paper uses
    FineWeb-Edu). Token budgets larger than the pool (a reduced ``pool_tokens``) are capped at
    the pool with a logged warning; a step whose budget covers the pool then scores every
    candidate on the same tokens.
(2) ``max_generations`` optionally caps the number of generations (default: no cap), so that
    a CPU run stays short; the default formula gives 4 generations on stories260K.
(3) A candidate is scored by swapping its dropped submodules for ``ZeroAttention`` /
    ``ZeroMLP`` (outputs that add nothing to the residual) and restoring them afterwards; the
    norm that fed only a dropped submodule stays in place during the search but its output is
    unused, so the function is the same as after surgery. Blocks are run from a cached block-0
    input; a window cut by the budget is run whole and scored on its first tokens only (same
    values, as attention is causal). Fitness values are memoised per (configuration, tokens).
(4) Randomness comes from one ``random.Random(seed)`` (the reference code seeds the global
    RNGs), windows drawn for a step are scored in index order, and fitness ties go to the
    earlier candidate, so a seed fixes the result.
(5) On Phi (one norm shared by attention and MLP) the shared norm is removed only with a
    whole block, so the achieved sparsity can fall a few norm parameters short of ``k/N``.
(6) For the record only (the search does not use it), the initial population's best and the
    final best are re-scored on one common draw of ``tokens[-1]`` tokens; ``plan.info`` keeps
    both, the per-generation history, the generations run and the submodule counts.

Memory: the dense logits of every calibration window are kept on the CPU in the model's
dtype (windows x seqlen x vocab), as the reference code keeps its target logits.

(Slightly over the usual module size: a quarter of it is this account of the algorithm and
its departures, which belongs beside the code it describes.)
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from twossp.adapters import ModelAdapter, get_adapter
from twossp.data import CalibrationSpec
from twossp.devices import input_device
from twossp.forward import capture_block_inputs, logits_from_hidden, run_blocks
from twossp.methods.base import PruneContext, PruningMethod, select_samples
from twossp.methods.registry import register
from twossp.plan import PrunePlan
from twossp.progress import track
from twossp.scoring import zeroed
from twossp.sparsity import blocks_for_sparsity, check_rounding, validate_sparsity

log = logging.getLogger(__name__)

POOLS = ("evopress", "run")

# A configuration: (sorted blocks whose attention is dropped, sorted blocks whose MLP is dropped).
Genome = tuple[tuple[int, ...], tuple[int, ...]]
# Calibration tokens of one selection step: (window index, tokens used from its start), sorted.
Windows = tuple[tuple[int, int], ...]


def default_generations(n_blocks: int, k: int) -> int:
    """EvoPress's generation count for depth pruning: ``int(k * (N - k) / 1.5)``."""
    return int(k * (n_blocks - k) / 1.5)


def random_genome(rng: random.Random, n_blocks: int, k: int) -> Genome:
    """Drop ``k`` attention and ``k`` MLP submodules chosen uniformly at random."""
    attn = tuple(sorted(rng.sample(range(n_blocks), k)))
    mlp = tuple(sorted(rng.sample(range(n_blocks), k)))
    return attn, mlp


def mutate(rng: random.Random, genome: Genome, n_blocks: int, max_mutations: int) -> Genome:
    """Level-switch mutation: ``min(U1, U2)`` swaps, each within attention or within MLP."""
    kinds = [set(genome[0]), set(genome[1])]
    swaps = min(rng.randint(1, max_mutations), rng.randint(1, max_mutations))
    for _ in range(swaps):
        removed = kinds[rng.randint(0, 1)]
        kept = [i for i in range(n_blocks) if i not in removed]
        drop = rng.choice(kept)
        restore = rng.choice(sorted(removed))
        removed.remove(restore)
        removed.add(drop)
    return tuple(sorted(kinds[0])), tuple(sorted(kinds[1]))


def sample_windows(rng: random.Random, n_windows: int, seqlen: int, tokens: int) -> Windows:
    """Distinct random windows holding exactly ``tokens`` tokens (the last one cut)."""
    chosen, used = [], 0
    for w in rng.sample(range(n_windows), n_windows):
        if used >= tokens:
            break
        take = min(seqlen, tokens - used)
        chosen.append((w, take))
        used += take
    return tuple(sorted(chosen))


@dataclass
class SearchResult:
    """Outcome of :meth:`EvoPress.evolve`.

    Attributes:
        best: the final configuration.
        history: the population's best fitness after the initial selection and after each
            generation, each as measured in its own selection step (on its own tokens).
        initial_fitness / best_fitness: the initial population's best and the final best,
            scored on one fresh draw of ``tokens[-1]`` tokens, so the two compare.
    """

    best: Genome
    history: list[float]
    initial_fitness: float
    best_fitness: float


class KLFitness:
    """KL divergence of a configuration's next-token distribution to the dense model's.

    The dense logits and the block-0 inputs of every calibration window are computed once.
    """

    def __init__(self, adapter: ModelAdapter, calibration: torch.Tensor, progress: bool = True):
        self.adapter = adapter
        device = input_device(adapter.model)
        self.samples = calibration.to(device)
        self.inputs: list[tuple[torch.Tensor, dict]] = []
        self.dense: list[torch.Tensor] = []
        self.evaluations = 0
        self._memo: dict[tuple[Genome, Windows], float] = {}
        for s in track(
            self.samples, desc="EvoPress dense logits", unit="windows", show=progress, logger=log
        ):
            self.inputs.append(capture_block_inputs(adapter, s[None]))
            self.dense.append(self._logits(len(self.inputs) - 1).cpu())

    @torch.no_grad()
    def _logits(self, w: int) -> torch.Tensor:
        hidden, kwargs = self.inputs[w]
        return logits_from_hidden(self.adapter, run_blocks(self.adapter, hidden, kwargs))[0]

    def applied(self, genome: Genome):
        """Temporarily replace the dropped submodules by ones that add nothing."""
        units = [("attention", i) for i in genome[0]] + [("mlp", i) for i in genome[1]]
        return zeroed(self.adapter, units)

    @torch.no_grad()
    def __call__(self, genome: Genome, windows: Windows) -> float:
        """Mean per-token ``KL(p_dense || p_genome)`` over ``windows``."""
        key = (genome, windows)
        if key not in self._memo:
            self.evaluations += 1
            total, count = 0.0, 0
            with self.applied(genome):
                for w, take in windows:
                    n = take - 1  # the last token predicts nothing in the window
                    if n < 1:
                        continue
                    log_q = self._logits(w)[:n].float().log_softmax(-1)
                    log_p = self.dense[w][:n].to(log_q.device).float().log_softmax(-1)
                    kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum")
                    total += float(kl.double())
                    count += n
            self._memo[key] = total / max(count, 1)
        return self._memo[key]


@register("evopress")
@dataclass
class EvoPress(PruningMethod):
    """EvoPress over attention / MLP submodules with the paper's defaults.

    Attributes:
        offspring: offspring per generation (paper: 32).
        survivors: survivors of each selection step; the last is the population size
            (paper: 2, 1).
        tokens: calibration tokens of each selection step (paper: 2048, 32768); capped at the
            calibration set with a warning.
        initially_generated: random configurations drawn for the initial population (64).
        initial_tokens: calibration tokens to pick the initial population (2048).
        max_mutations: upper end of the two uniform draws whose minimum is the number of
            swaps in a mutation (3).
        generations: None uses ``int(k * (N - k) / 1.5)``.
        max_generations: cap on the generations (None: no cap).
        rounding: ``up`` (``k = ceil(s * N)``) or ``nearest``.
        pool: ``evopress`` (its own calibration pool, below) or ``run`` (the run's windows).
        pool_tokens / pool_seqlen: size of the ``evopress`` pool and of its windows.
    """

    rounding: str = "up"
    pool: str = "evopress"
    pool_tokens: int = 131072
    pool_seqlen: int = 8192
    offspring: int = 32
    survivors: tuple[int, ...] = (2, 1)
    tokens: tuple[int, ...] = (2048, 32768)
    initially_generated: int = 64
    initial_tokens: int = 2048
    max_mutations: int = 3
    generations: int | None = None
    max_generations: int | None = None

    def __post_init__(self) -> None:
        self.survivors = tuple(int(s) for s in self.survivors)
        self.tokens = tuple(int(t) for t in self.tokens)

    # --- settings and budget -----------------------------------------------------------
    def _check_settings(self) -> None:
        if len(self.survivors) != len(self.tokens) or not self.survivors:
            raise ValueError(
                f"survivors {list(self.survivors)} and tokens {list(self.tokens)} must be "
                "non-empty lists of the same length (one entry per selection step)"
            )
        if min(self.survivors) < 1:
            raise ValueError(f"survivors must all be >= 1, got {list(self.survivors)}")
        if min(self.tokens) < 2 or self.initial_tokens < 2:
            raise ValueError(
                f"token budgets must be >= 2, got tokens={list(self.tokens)}, "
                f"initial_tokens={self.initial_tokens}"
            )
        for key in ("offspring", "initially_generated", "max_mutations"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        check_rounding(self.rounding)
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.pool_seqlen < 2 or self.pool_tokens < self.pool_seqlen:
            raise ValueError(
                f"need pool_seqlen >= 2 and pool_tokens >= pool_seqlen, got "
                f"pool_seqlen={self.pool_seqlen}, pool_tokens={self.pool_tokens}"
            )
        for key in ("generations", "max_generations"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key} must be >= 0 or null, got {value}")

    def units_to_remove(self, model: nn.Module, sparsity: float) -> int:
        """How many attention (and as many MLP) submodules to drop (``k``)."""
        n = get_adapter(model).num_blocks
        return blocks_for_sparsity(validate_sparsity(sparsity), n, self.rounding)

    def calibration_spec(self, base: CalibrationSpec, context: int | None = None):
        """The ``evopress`` pool: ``pool_tokens`` tokens in document-packed windows of
        ``pool_seqlen`` (capped at the model's ``context``), documents in file order."""
        if self.pool == "run":
            return base
        seqlen = min(self.pool_seqlen, context) if context else self.pool_seqlen
        n = self.pool_tokens // seqlen
        return replace(base, n_samples=n, seqlen=seqlen, seed=0, packing="documents")

    def calibration_identity(self, base: CalibrationSpec) -> CalibrationSpec:
        """The ``evopress`` pool reads only the run's dataset (its own sizes and packing are
        method settings): the run's window settings hash as their defaults."""
        if self.pool == "run":
            return base
        return CalibrationSpec(dataset=base.dataset)

    def n_generations(self, n_blocks: int, k: int) -> int:
        n = default_generations(n_blocks, k) if self.generations is None else self.generations
        return n if self.max_generations is None else min(n, self.max_generations)

    def check(self, model: nn.Module, sparsity: float) -> None:
        self._check_settings()
        adapter = get_adapter(model)
        if not all(
            adapter.has_attention(i) and adapter.has_mlp(i) for i in range(adapter.num_blocks)
        ):
            raise ValueError("EvoPress expects a model whose blocks all have attention and an MLP")
        self.units_to_remove(model, sparsity)

    @staticmethod
    def _cap(tokens: int, pool: int, what: str) -> int:
        if tokens > pool:
            log.warning(
                "EvoPress: %s of %d tokens exceeds the %d calibration tokens; using %d",
                what,
                tokens,
                pool,
                pool,
            )
        return min(tokens, pool)

    # --- search ------------------------------------------------------------------------
    def plan(self, model: nn.Module, ctx: PruneContext) -> PrunePlan:
        self.check(model, ctx.sparsity)
        calib = select_samples(ctx.calibration, None, "EvoPress")
        adapter = get_adapter(model)
        k = self.units_to_remove(model, ctx.sparsity)
        generations = self.n_generations(adapter.num_blocks, k)
        fitness = KLFitness(adapter, calib, ctx.progress)
        result = self.evolve(fitness, k, generations, random.Random(ctx.seed), ctx.progress)
        return self._plan(adapter, result, k, ctx.sparsity, generations, fitness.evaluations)

    def evolve(
        self, fitness: KLFitness, k: int, generations: int, rng: random.Random, progress: bool
    ) -> SearchResult:
        """Run the search from a random initial population."""
        n_blocks = fitness.adapter.num_blocks
        n_windows, seqlen = fitness.samples.shape
        pool = n_windows * seqlen
        initial_tokens = self._cap(self.initial_tokens, pool, "initial_tokens")
        tokens = [self._cap(t, pool, f"selection step {j}") for j, t in enumerate(self.tokens)]

        bar = track(
            range(generations), desc="EvoPress", unit="generations", show=progress, logger=log
        )

        def select(candidates: list[Genome], keep: int, budget: int):
            windows = sample_windows(rng, n_windows, seqlen, budget)
            scores = []
            for c in candidates:
                scores.append(fitness(c, windows))
                bar.within(len(scores), len(candidates))
            order = sorted(range(len(candidates)), key=lambda j: (scores[j], j))[:keep]
            return [candidates[j] for j in order], [scores[j] for j in order]

        space = math.comb(n_blocks, k) ** 2  # distinct configurations
        initial = self._distinct(
            lambda: random_genome(rng, n_blocks, k), min(self.initially_generated, space), set()
        )
        population, scores = select(initial, self.survivors[-1], initial_tokens)
        first, history = population[0], [scores[0]]
        for _ in bar:
            children = self._distinct(
                lambda parents=population: mutate(
                    rng, rng.choice(parents), n_blocks, self.max_mutations
                ),
                min(self.offspring, space - len(population)),
                set(population),
            )
            for step, (keep, budget) in enumerate(zip(self.survivors, tokens, strict=True)):
                if step == len(tokens) - 1:  # elitism: parents compete in the last step
                    children += [p for p in population if p not in children]
                children, scores = select(children, keep, budget)
            population = children
            history.append(scores[0])
            bar.set_postfix(kl=f"{scores[0]:.4g}")
        # Score the initial and the final best on the same tokens, so the two compare.
        windows = sample_windows(rng, n_windows, seqlen, tokens[-1])
        best = population[0]
        return SearchResult(best, history, fitness(first, windows), fitness(best, windows))

    @staticmethod
    def _distinct(draw, count: int, exclude: set) -> list[Genome]:
        """Up to ``count`` distinct draws not in ``exclude`` (gives up after many repeats)."""
        out: list[Genome] = []
        seen = set(exclude)
        for _ in range(100 * count + 1000):
            if len(out) >= count:
                break
            genome = draw()
            if genome not in seen:
                seen.add(genome)
                out.append(genome)
        if len(out) < count:
            log.debug("EvoPress: drew %d distinct configurations of %d wanted", len(out), count)
        return out

    def _plan(self, adapter, result: SearchResult, k, sparsity, generations, evaluations):
        best = result.best
        params = [adapter.submodule_params(i) for i in range(adapter.num_blocks)]
        removed = sum(params[i][0] for i in best[0]) + sum(params[i][1] for i in best[1])
        block_params = adapter.block_params()
        info = {
            "n_attention_removed": len(best[0]),
            "n_mlp_removed": len(best[1]),
            "generations": generations,
            "evaluations": evaluations,
            "best_fitness": result.best_fitness,
            "initial_fitness": result.initial_fitness,
            "fitness_history": result.history,
            "target_sparsity": sparsity,
            "target_units_per_kind": k,
            "target_block_fraction": k / adapter.num_blocks,
            "removed_submodule_params": removed,
            "planned_sparsity": removed / block_params,
        }
        log.info(
            "EvoPress: drop attention %s and MLP %s (KL %.4g after %d generations)",
            list(best[0]),
            list(best[1]),
            result.best_fitness,
            generations,
        )
        return PrunePlan(attention=list(best[0]), mlp=list(best[1]), info=info)
