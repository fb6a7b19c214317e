"""What the 2SSP paper evaluates (Sandri, Cunegatti, Iacca, 2025; arXiv 2501.17771), defined once.

Its models (as ``conf/model`` keys), target sparsities, perplexity corpora and downstream
tasks. The experiment configs read them through the ``${paper:<name>}`` (a list) and
``${paper_grid:<name>}`` (a comma-joined sweep value) resolvers
(``hydra_plugins/twossp_sweeper``), the analysis orders its rows and columns by them, and the
tests compare with them. Pure Python: importing it loads nothing heavy.
"""

from __future__ import annotations

MODELS = ("llama2_7b", "mistral_7b", "qwen2_5_7b", "phi3_medium")
SPARSITIES = (0.25, 0.375, 0.5)
PPL_DATASETS = ("wikitext2", "c4", "fineweb_edu")
# Scored beside the paper's corpora by this harness (not in the paper).
ADDED_PPL_DATASETS = ("ptb",)
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu")

FACTS = {
    "models": MODELS,
    "sparsities": SPARSITIES,
    "ppl_datasets": PPL_DATASETS,
    "scored_ppl_datasets": PPL_DATASETS + ADDED_PPL_DATASETS,
    "tasks": TASKS,
}


def fact(name: str) -> list:
    """The paper's ``name`` (a key of :data:`FACTS`) as a list."""
    if name not in FACTS:
        raise ValueError(f"${{paper:{name}}}: choose one of {', '.join(FACTS)}")
    return list(FACTS[name])


def grid(name: str) -> str:
    """The paper's ``name`` as a sweep value: ``"llama2_7b,mistral_7b,..."``."""
    return ",".join(str(v) for v in fact(name))
