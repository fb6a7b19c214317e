"""Which downstream documents come in clusters, and which cluster each belongs to.

Paired comparisons treat documents as independent draws unless told otherwise. Three of the
paper's tasks are built from clusters of related documents, whose outcomes move together:

- WinoGrande: twin sentences that differ in a trigger word or two and flip the answer, stored
  next to each other with the same two options (46 of the validation split's first 100
  documents are 23 such pairs). A cluster is a run of adjacent documents with the same pair
  of options.
- HellaSwag: contexts cut from the same ActivityNet / WikiHow activity (``activity_label``).
- MMLU: the 57 subjects, one lm-eval leaf task each.

ARC and PIQA questions are written one by one: no clusters (``None``). The cluster of a
document is recorded with its outcome (:mod:`twossp.items`), so an interval can resample
whole clusters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _twins(docs: Sequence[dict], leaf: str) -> list[str | None]:
    out: list[str | None] = []
    start, previous = 0, None
    for i, doc in enumerate(docs):
        options = (doc.get("option1"), doc.get("option2"))
        if options != previous:
            start, previous = i, options
        out.append(f"{leaf}:twins@{start}")
    return out


def _activity(docs: Sequence[dict], leaf: str) -> list[str | None]:
    return [f"{leaf}:{doc.get('activity_label')}" for doc in docs]


def _subject(docs: Sequence[dict], leaf: str) -> list[str | None]:
    return [leaf] * len(docs)


# lm-eval leaf task name prefix -> how its documents cluster.
CLUSTERED: dict[str, Callable[[Sequence[dict], str], list[str | None]]] = {
    "winogrande": _twins,
    "hellaswag": _activity,
    "mmlu_": _subject,
}


def clusters(leaf: str, docs: Sequence[dict]) -> list[str | None]:
    """The cluster of each of ``docs`` (a leaf task's documents, in lm-eval's order)."""
    for prefix, rule in CLUSTERED.items():
        if leaf.startswith(prefix):
            return rule(docs, leaf)
    return [None] * len(docs)
