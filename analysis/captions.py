"""The notes under a table: what its rows were computed with, read from the rows themselves.

- evaluation windows x tokens per dataset (:func:`eval_note`), calibration windows x tokens
  per method and seeds (:func:`calib_note`), device and dtype (:func:`runs_note`): together
  :func:`context_notes`;
- how many runs miss their target sparsity (:func:`achieved_note`), lm-eval ``limit``
  subsampling (:func:`limit_notes`), CPU threads of timed runs (:func:`threads_note`);
- "Smoke test, not a result" for models too small to answer downstream tasks above chance
  (:data:`SMOKE_TEST_MODELS`, :func:`smoke_note`).

Each note names the paper's setting where ours differs (:data:`PAPER_SEQLEN`).
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.cells import DENSE, missing
from analysis.order import METHOD_ORDER, MODEL_ORDER, PPL_DATASETS, ordered

# Models too small to answer the downstream tasks above chance (what makes them so): their
# accuracies are labelled smoke tests, never results.
SMOKE_TEST_MODELS = {"stories260k": "260K parameters"}
PAPER_SEQLEN = 2048  # the paper's evaluation and calibration window, named in notes only


def _span(values) -> str:
    values = sorted({int(v) for v in values if not missing(v)})
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def eval_note(rows: pd.DataFrame) -> str | None:
    """How the perplexity rows were scored: windows x tokens per dataset."""
    ppl = rows[rows["metric"] == "ppl"]
    if ppl.empty:
        return None
    parts, seqlens = {}, set()
    for dataset in ordered(ppl["dataset"], PPL_DATASETS):
        variants = [json.loads(v) for v in ppl.loc[ppl["dataset"] == dataset, "variant"]]
        windows = _span(v.get("windows") for v in variants)
        seqlen = _span(v.get("seqlen") for v in variants)
        seqlens |= {v.get("seqlen") for v in variants}
        parts[dataset] = (
            f"{windows} x {seqlen}" if windows != "?" else f"? x {seqlen} (count not recorded)"
        )
    if len(set(parts.values())) == 1:
        text = f"each dataset {next(iter(parts.values()))}"
    else:
        text = ", ".join(f"{d} {p}" for d, p in parts.items())
    paper = (
        f" (the paper scores every window of {PAPER_SEQLEN} tokens)"
        if seqlens != {PAPER_SEQLEN}
        else ""
    )
    return f"Perplexity scored on windows x tokens: {text}{paper}."


def calib_note(rows: pd.DataFrame) -> str | None:
    """What calibration the pruned rows read: dataset, windows x tokens per method, seeds."""
    runs = rows.drop_duplicates("config_hash")
    runs = runs[runs["calib_dataset"].notna() & (runs["method"] != DENSE)]
    if runs.empty:
        return None
    per_method = [
        f"{m} {_span(sub['calib_windows'])} x {_span(sub['calib_seqlen'])}"
        for m in ordered(runs["method"], METHOD_ORDER)
        for sub in [runs[runs["method"] == m]]
    ]
    datasets = ", ".join(ordered(runs["calib_dataset"], ()))
    seeds = sorted({int(s) for s in runs["calib_seed"].dropna()})
    seed_text = f"; calibration seed{'s' if len(seeds) > 1 else ''} {short_list(seeds)}"
    seqlens = {int(s) for s in runs["calib_seqlen"].dropna()}
    paper = f" (the paper: windows of {PAPER_SEQLEN} tokens)" if seqlens - {PAPER_SEQLEN} else ""
    return (
        f"Calibration read from {datasets}, windows x tokens: {', '.join(per_method)}"
        f"{seed_text}{paper}."
    )


def short_list(values) -> str:
    """``values`` joined by commas, or ``first..last (count)`` when there are more than 6."""
    values = list(values)
    if len(values) > 6:
        return f"{values[0]}..{values[-1]} ({len(values)})"
    return ", ".join(map(str, values))


def _known(value) -> str:
    return "?" if missing(value) or value == "" else str(value)


def runs_note(rows: pd.DataFrame) -> str | None:
    runs = rows.drop_duplicates("config_hash")
    if runs.empty:
        return None
    kinds = sorted(
        {f"{_known(d)} / {_known(t)}" for d, t in zip(runs["device"], runs["dtype"], strict=True)}
    )
    text = f"Computed on {', '.join(kinds)} (device / dtype)."
    if (runs["protocol"] == "unrecorded").any():
        text += (
            " Protocol 'unrecorded': run files of the first schema, from before protocols "
            "and calibration were recorded."
        )
    return text


def achieved_note(rows: pd.DataFrame, tolerance: float = 0.005) -> str | None:
    runs = rows.drop_duplicates("config_hash")
    runs = runs[runs["method"] != DENSE]
    gap = (runs["achieved_sparsity"] - runs["target_sparsity"]).abs()
    if runs.empty or not (gap > tolerance).any():
        return None
    return (
        f"Columns are target sparsities; {int((gap > tolerance).sum())} of {len(runs)} runs "
        f"are more than {tolerance:g} away from their target (see achieved_sparsity)."
    )


def context_notes(rows: pd.DataFrame) -> list[str]:
    return [n for n in (eval_note(rows), calib_note(rows), runs_note(rows)) if n]


def smoke_note(rows: pd.DataFrame) -> list[str]:
    """A warning for models too small to answer the downstream tasks above chance."""
    smoke = [m for m in ordered(rows["model"], MODEL_ORDER) if m in SMOKE_TEST_MODELS]
    if not smoke:
        return []
    named = ", ".join(f"{m} ({SMOKE_TEST_MODELS[m]})" for m in smoke)
    return [
        f"Smoke test, not a result: {named} answers these tasks at chance level; its rows "
        "check that the pipeline runs."
    ]


def limit_notes(frame: pd.DataFrame) -> list[str]:
    """A warning when downstream rows come from a ``limit``-ed (subsampled) evaluation: the
    limit and the documents scored per task (a group such as MMLU applies the limit to each
    of its subtasks)."""
    per_task: dict[str, set] = {}
    for task, raw in zip(frame["dataset"], frame["variant"], strict=True):
        if not isinstance(raw, str):
            continue
        v = json.loads(raw)
        if v.get("limit") is None:
            continue
        subtasks = v.get("subtasks") or 1
        scope = f" per subtask ({subtasks} subtasks)" if subtasks > 1 else ""
        docs = f", {v['samples']} documents" if v.get("samples") is not None else ""
        per_task.setdefault(task, set()).add(f"{v['limit']}{scope}{docs}")
    if not per_task:
        return []
    plain = {t: d for t, d in per_task.items() if not any("subtask" in x for x in d)}
    groups = {t: d for t, d in per_task.items() if t not in plain}
    parts = []
    if plain:
        limits = sorted({x.split(",")[0] for d in plain.values() for x in d}, key=float)
        parts.append(f"at most {' / '.join(limits)} documents per task")
    parts += [f"{t}: {' / '.join(sorted(d))}" for t, d in sorted(groups.items())]
    same = (
        "the same documents for every method"
        if all(len(d) == 1 for d in per_task.values())
        else "limits differ between runs"
    )
    return [
        f"Subsampled (lm-eval limit): {'; '.join(parts)}; {same}; not comparable with "
        "full-set numbers."
    ]


def threads_note(runs: pd.DataFrame) -> list[str]:
    """The CPU thread counts of timed runs (what a CPU time depends on), when recorded."""
    if "threads" not in runs.columns or not runs["threads"].notna().any():
        return []
    return [f"CPU threads: {short_list(sorted({int(n) for n in runs['threads'].dropna()}))}."]
