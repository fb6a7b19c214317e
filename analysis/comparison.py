"""The paired comparison view: one reference method against every other method and dense.

:func:`comparisons` pairs the reference's run with each rival's on the units both scored
(:class:`analysis.verdicts.Units`), per model, protocol, sparsity and perplexity dataset or
downstream task: the perplexity ratio (reference / rival) with its paired 95% t interval and
sign-flip p, or the accuracy difference (reference - rival, in points) with its paired
bootstrap interval and McNemar p, each with the difference the design detects at 80% power
and the units paired. Rivals are the other pruned methods at the same sparsity, then the
dense model. :func:`comparison_table` renders them (``paired_comparison``), and
:func:`verdict_sentence` states each verdict in words, from the test, for the results pages
(never typed by hand). A user's own runs that differ in a setting are split into setting
groups (:func:`analysis.cells.unique_cells`, ``split``) and compared within their group.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import draws, paired
from analysis.cells import (
    DENSE,
    SETTING,
    select,
    sparsity_label,
    split_labels,
    split_note,
    strict,
    unique_cells,
    with_sparsity,
)
from analysis.order import (
    METHOD_ORDER,
    MODEL_ORDER,
    PPL_DATASETS,
    PROTOCOL_ORDER,
    ROW_KEY,
    TASKS,
    natural_key,
)
from analysis.render import Table
from analysis.verdicts import Run, Units, as_units, p_phrase, p_text

NAME = "paired_comparison"
REFERENCE = "twossp"
METRICS = ("ppl", "acc", "acc_norm")
# How the sentences name methods and datasets (keys as in conf/; others print as they are).
METHOD_NAMES = {
    "twossp": "2SSP",
    "shortgpt": "ShortGPT",
    "window": "the window baseline",
    "blockpruner": "BlockPruner",
    "evopress": "EvoPress",
    "slicegpt": "SliceGPT",
    DENSE: "the dense model",
}
DATASET_NAMES = {
    "wikitext2": "WikiText-2",
    "c4": "C4",
    "fineweb_edu": "FineWeb-Edu",
    "ptb": "PTB",
    "arc_easy": "ARC-Easy",
    "arc_challenge": "ARC-Challenge",
    "hellaswag": "HellaSwag",
    "piqa": "PIQA",
    "winogrande": "WinoGrande",
    "mmlu": "MMLU",
}
COLUMNS = ["model", "protocol", SETTING, "sparsity", "metric", "dataset", "reference", "rival"]


def _rank(value, order) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def estimate_text(result: paired.Paired) -> str:
    """``"0.31 [0.27, 0.35]"`` (ratio) or ``"+6.0 [+1.2, +10.8] pts"`` (difference)."""
    if result.scale == paired.RATIO:
        return f"{result.estimate:.2f} [{result.low:.2f}, {result.high:.2f}]"
    return f"{_points(result.estimate)} [{_points(result.low)}, {_points(result.high)}] pts"


def detectable_value_text(result: paired.Paired) -> str:
    """``"1.15x"`` or ``"8.3 pts"``; empty when it cannot be estimated."""
    if math.isnan(result.detectable):
        return ""
    if result.scale == paired.RATIO:
        return f"{result.detectable:.2f}x"
    return f"{100 * result.detectable:.1f} pts"


def units_text(result: paired.Paired, metric: str) -> str:
    unit = "windows" if metric == "ppl" else "documents"
    clusters = f" ({result.clusters} clusters)" if result.clusters else ""
    return f"{result.n} {unit}{clusters}"


def method_name(method: str) -> str:
    """How pages and captions name a method (``twossp`` -> ``2SSP``)."""
    return METHOD_NAMES.get(method, method)


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def verdict_sentence(
    reference: str,
    rival: str,
    metric: str,
    dataset: str,
    sparsity: float,
    result: paired.Paired | None,
    alpha: float = paired.ALPHA,
    setting: str = "",
) -> str:
    """One comparison's verdict in words, from its paired test.

    Args:
        reference, rival: the methods (keys as in ``conf/method``; ``dense``).
        metric: ``ppl``, ``acc`` or ``acc_norm``.
        dataset: the perplexity dataset or task.
        sparsity: the reference's target sparsity.
        result: the comparison of the reference with the rival (None: no shared units).
        alpha: two-sided level.
        setting: the setting group of a user's own runs (e.g. ``eval.max_windows=8``), named
            after the sparsity; "" for none.

    Returns:
        e.g. "2SSP's perplexity is lower than ShortGPT's on WikiText-2 at 37.5% (ratio 0.31
        [0.27, 0.35], p < 0.001, 8 windows)." or "... cannot be told apart (...); the
        design could detect a ratio of 1.15 at 80% power."
    """
    ref, riv = method_name(reference), method_name(rival)
    where = f"on {DATASET_NAMES.get(dataset, dataset)} at {sparsity_label(sparsity)}"
    where += f" ({setting})" if setting else ""
    what = "perplexity" if metric == "ppl" else "accuracy"
    if metric not in ("ppl", "acc"):
        what += f" ({metric})"
    if result is None:
        return f"{ref} and {riv} {where} cannot be compared: their runs share no scored units."
    if result.scale == paired.RATIO:
        shown = f"ratio {result.estimate:.2f} [{result.low:.2f}, {result.high:.2f}]"
    else:
        shown = (
            f"difference {_points(result.estimate)} points "
            f"[{_points(result.low)}, {_points(result.high)}]"
        )
    stats = f"{shown}, {p_phrase(result.p)}, {units_text(result, metric)}"
    if result.p < alpha and result.direction != 0:
        if metric == "ppl":
            way = "lower" if result.direction < 0 else "higher"
        else:
            way = "higher" if result.direction > 0 else "lower"
        return f"{_possessive(ref)} {what} is {way} than {_possessive(riv)} {where} ({stats})."
    plural = "perplexities" if metric == "ppl" else "accuracies"
    if metric not in ("ppl", "acc"):
        plural += f" ({metric})"
    both = f"{_possessive(ref)} and {_possessive(riv)} {plural}"
    text = f"{both} {where} cannot be told apart ({stats})"
    if math.isnan(result.detectable):
        return text + "; the runs differ on too few units to say what the design could detect."
    if result.scale == paired.RATIO:
        could = f"a ratio of {result.detectable:.2f}"
    else:
        could = f"a difference of {100 * result.detectable:.1f} points"
    return text + f"; the design could detect {could} at {paired.POWER:.0%} power."


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    datasets = (*PPL_DATASETS, *TASKS)
    rivals = (*[m for m in METHOD_ORDER if m != DENSE], DENSE)
    keys = frame.apply(
        lambda r: (
            _rank(r["model"], MODEL_ORDER),
            _rank(r["protocol"], PROTOCOL_ORDER),
            natural_key(r[SETTING]),
            r["sparsity"],
            METRICS.index(r["metric"]),
            _rank(r["dataset"], datasets),
            _rank(r["rival"], rivals),
        ),
        axis=1,
    )
    return frame.iloc[sorted(range(len(frame)), key=lambda i: keys.iloc[i])].reset_index(drop=True)


def comparisons(
    frame: pd.DataFrame,
    items: pd.DataFrame | Units | None = None,
    reference: str = REFERENCE,
    experiment: str | list[str] | None = None,
    split: bool | None = None,
) -> pd.DataFrame:
    """Every paired comparison of ``reference`` with the other methods and dense.

    Args:
        frame: merged result rows.
        items: per-unit outcomes (:func:`analysis.collect.load_items`) or :class:`Units`.
        reference: the method compared with the others (a pruned method).
        experiment: rows of this experiment (or experiments) only.
        split: setting groups instead of refusals, each metric's rows split on their own
            (default: unless ``experiment`` is published, :func:`analysis.cells.strict`).

    Returns:
        One row per comparison: ``model, protocol, setting, sparsity, metric, dataset,
        reference, rival`` (``setting``: the setting group, "" when none), the
        :class:`analysis.paired.Paired` fields (``estimate``, ``low``, ``high``, ``p``, ``n``,
        ``detectable``, ``scale``, ``test``, ``clusters``; NaN where the runs share no units)
        and ``sentence`` (:func:`verdict_sentence`).

    Raises:
        AmbiguousCellError: a cell fed by several configurations (unless split).
    """
    if reference == DENSE:
        raise ValueError("the reference must be a pruned method, not dense")
    units = as_units(items)
    rows = with_sparsity(select(frame, experiment))
    split = not strict(experiment) if split is None else split
    key = [*ROW_KEY, "sparsity", "metric", "dataset"]
    parts = [unique_cells(rows[rows["metric"] == m], key, NAME, split=split) for m in METRICS]
    rows = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    if SETTING not in rows.columns:
        rows = rows.assign(**{SETTING: ""})
    out = []
    same = ["model", "protocol", SETTING, "metric", "dataset"]
    for _, ref in rows[rows["method"] == reference].iterrows():
        shared = (rows[same] == ref[same]).all(axis=1)
        rivals = rows[
            shared
            & (rows["method"] != reference)
            & ((rows["method"] == DENSE) | np.isclose(rows["sparsity"], ref["sparsity"]))
        ]
        for _, rival in rivals.iterrows():
            result = units.compare(Run.of(ref), Run.of(rival))
            stats = {
                "estimate": np.nan, "low": np.nan, "high": np.nan, "p": np.nan, "n": 0,
                "detectable": np.nan, "scale": None, "test": None, "clusters": None,
            }  # fmt: skip
            if result is not None:
                stats = {k: getattr(result, k) for k in stats}
            sentence = verdict_sentence(
                reference, rival["method"], ref["metric"], ref["dataset"], ref["sparsity"],
                result, setting=ref[SETTING],
            )  # fmt: skip
            out.append(
                {
                    **{c: ref[c] for c in ("model", "protocol", SETTING, "sparsity")},
                    **{c: ref[c] for c in ("metric", "dataset")},
                    "reference": reference,
                    "rival": rival["method"],
                    **stats,
                    "sentence": sentence,
                }
            )
    if not out:
        return pd.DataFrame(columns=[*COLUMNS, "estimate", "p", "n", "detectable", "sentence"])
    return _ordered(pd.DataFrame(out))


def by_draw(frame: pd.DataFrame, experiment: str | list[str] | None) -> bool | None:
    """``split`` for :func:`comparisons` and :func:`comparison_table`: an experiment of
    calibration draws (:func:`analysis.draws.applies`) is compared within each draw (its
    cells hold one run per draw); None (the default rule) otherwise."""
    return True if draws.applies(frame, experiment) else None


def comparison_table(
    frame: pd.DataFrame,
    items: pd.DataFrame | Units | None = None,
    reference: str = REFERENCE,
    experiment: str | list[str] | None = None,
    split: bool | None = None,
) -> Table:
    """``paired_comparison``: :func:`comparisons` as a table, one row per rival (with a
    ``setting`` level after the protocol when a user's runs were split)."""
    found = comparisons(frame, items, reference, experiment, split)
    name = NAME
    title = f"Paired comparison: {method_name(reference)} against each method and dense"
    grouped = bool(split_labels(found))
    names = ["model", "protocol", *([SETTING] if grouped else [])]
    names += ["sparsity", "measure", f"{reference} vs"]
    labels = [
        (
            r.model,
            r.protocol,
            *([getattr(r, SETTING)] if grouped else []),
            sparsity_label(r.sparsity),
            f"{r.metric} {r.dataset}",
            r.rival,
        )
        for r in found.itertuples(index=False)
    ]
    index = pd.MultiIndex.from_tuples(labels or [("",) * len(names)], names=names)
    cols = pd.MultiIndex.from_tuples(
        [("ratio or difference [95%]",), ("p",), ("detectable (80% power)",), ("paired",)]
    )
    values = pd.DataFrame(np.nan, index=index, columns=cols)
    text = pd.DataFrame("", index=index, columns=cols, dtype=object)
    for i, r in enumerate(found.itertuples(index=False)):
        if not r.n:  # no shared units
            text.iloc[i, 0] = "no shared units"
            continue
        result = paired.Paired(
            r.scale, r.estimate, r.low, r.high, r.p, r.n, r.detectable, r.test,
            clusters=None if pd.isna(r.clusters) else int(r.clusters),
        )  # fmt: skip
        values.iloc[i] = [r.estimate, r.p, r.detectable, r.n]
        text.iloc[i] = [
            estimate_text(result),
            p_text(r.p),
            detectable_value_text(result),
            units_text(result, r.metric),
        ]
    if found.empty:
        values, text = values.iloc[0:0], text.iloc[0:0]
    notes = [
        f"{method_name(reference)} against each other pruned method at the same sparsity and "
        "against dense, paired on the units both runs scored. Perplexity: the ratio "
        f"{reference} / rival, exp of the mean per-window difference of log perplexity, with "
        "its paired t interval and a two-sided sign-flip permutation p (exact up to 20 "
        "windows, else 9999 seeded random flips). Accuracy: the difference "
        f"{reference} - rival in points, with a paired bootstrap interval (9999 seeded "
        "resamples of documents, or of whole clusters where documents come in clusters) and "
        "McNemar's exact p (with clusters, the larger of it and a cluster-robust Wald p). "
        f"Detectable: the smallest ratio or difference the design detects at "
        f"{paired.POWER:.0%} power, two-sided {paired.ALPHA:g}. Each p is one comparison's; "
        "claims over several comparisons need a correction (Holm).",
    ]
    missing = int((found["n"] == 0).sum()) if len(found) else 0
    if missing:
        notes.append(
            f"{missing} comparison(s) without shared units: one of the runs kept no per-unit "
            "outcomes, or they scored different units."
        )
    notes += split_note(found)
    return Table(name, title, values, None, 2, notes, text)


def applies(frame: pd.DataFrame, reference: str = REFERENCE, experiment=None) -> bool:
    """Whether ``reference`` has a perplexity or accuracy row with some rival beside it."""
    rows = select(frame, experiment)
    rows = rows[rows["metric"].isin(METRICS)]
    return bool((rows["method"] == reference).any() and (rows["method"] != reference).any())
