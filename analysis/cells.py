"""Which rows feed a table cell, and refusing to guess when several configurations could.

A table shows one experiment's rows (:func:`select`, by membership) and every cell must come
from one configuration. :func:`unique_cells` keeps one row per cell and raises
:class:`AmbiguousCellError` when the configurations of a cell differ in a recorded setting
(a method setting, calibration, the model, or an evaluation setting of the row's ``variant``
such as ``max_windows`` or lm-eval's ``limit``), naming the settings and their values.

Runs whose config hashes differ although every recorded setting of the cell agrees are one
measurement made twice: a plain run and the same configuration with ``eval=downstream`` (the
evaluation settings are part of the hash) both score perplexity with the same settings, and
the downstream run alone measures accuracy. Such a cell takes the newest run's row, provided
the runs pruned alike (same achieved sparsity, parameter counts and attention submodules
removed); otherwise it is refused too.

Refusing is for reproductions: the tables of a published experiment (a file in
``conf/experiment/``, :func:`strict`). A user's own runs (the experiment ``default`` of runs
started without an overlay, any other name not in ``conf/experiment/``, or every row at once)
are split instead (``unique_cells(..., split=True)``): configurations that differ in a
setting go to separate setting groups, labelled by the fewest settings that tell the groups
apart (:data:`SETTING`, e.g. ``eval.max_windows=8``), and a configuration a setting does not
apply to (another method's ``method.alpha``, dense's calibration, accuracy rows'
``max_windows``) appears in every group.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath

import numpy as np
import pandas as pd

from analysis.collect import EXPERIMENTS, N_ATTN
from analysis.order import ROW_KEY, natural_key
from twossp.config import CONF

DENSE = "dense"
# The row level that names a setting group in the tables of a user's own runs (split cells).
SETTING = "setting"
# The experiment of runs started without an experiment overlay (conf/config.yaml's
# experiment_name); name ad-hoc runs with experiment_name=<name>.
ADHOC = "default"
# Columns that describe a run's outcome or bookkeeping, not its configuration: never reported
# as the difference between two configurations of one cell.
NOT_SETTINGS = {
    "run_id",
    "config_hash",
    "experiment",
    EXPERIMENTS,
    "git_sha",
    "versions",
    "created_at",
    "achieved_sparsity",
    "params_before",
    "params_after",
    "block_params_before",
    "block_params_after",
    "prune_seconds",
    "metric",
    "dataset",
    "phase",
    "value",
    "unit",
    "ci_low",
    "ci_high",
    "variant",
    "sparsity",
    "threads",  # CPU threads: recorded for timing, not hashed (the same numbers)
    "plan_from",  # a replayed plan prunes the same model (twossp.reuse)
    "started_at",
    N_ATTN,
    SETTING,
}
# Variant entries that are measurements rather than settings (window_nll: the per-window
# losses a perplexity interval is computed from).
VARIANT_RESULTS = {"tokens", "docs", "stderr", "acc_stderr", "acc_norm_stderr", "window_nll"}
# What pruning produced: runs combined into one cell must agree on these.
OUTCOMES = ("achieved_sparsity", "params_after", "block_params_after", N_ATTN)
# ``DataFrame.attrs`` key of unique_cells' record of cells measured by several runs.
COMBINED = "combined_cells"


# Evaluation settings of a row's variant by the config key that sets them (setting labels).
VARIANT_SETTINGS = {
    "max_windows": "eval.max_windows",
    "window_sample": "eval.window_sample",
    "seqlen": "eval.seqlen",
    "limit": "eval.downstream.limit",
    "num_fewshot": "eval.downstream.num_fewshot",
}
# Recorded consequences of other settings: named in a setting label only when nothing else
# tells two groups apart.
DERIVED = {"calib_windows", "calib_source", "model_path", "model_fingerprint"}


class AmbiguousCellError(ValueError):
    """A table cell would be fed by more than one configuration."""


def published_experiments() -> set[str]:
    """The experiments defined in ``conf/experiment/`` (reproductions of a published setup)."""
    return {p.stem for p in (CONF / "experiment").glob("*.yaml")}


def strict(experiment: str | list[str] | None) -> bool:
    """Whether tables of ``experiment`` refuse a cell fed by several configurations: only a
    published experiment's (every name given is a file in ``conf/experiment/``). A user's
    own runs (:data:`ADHOC`, any other name, or None: every row) are split into setting
    groups instead (:func:`unique_cells` with ``split=True``)."""
    if experiment is None:
        return False
    names = {experiment} if isinstance(experiment, str) else set(experiment)
    return bool(names) and names <= published_experiments()


def select(frame: pd.DataFrame, experiment: str | list[str] | None) -> pd.DataFrame:
    """The rows of ``experiment`` (all rows for None; several experiments read together for a
    list), by membership.

    Rows carry the experiments their configuration belongs to (``experiments``, written by
    :mod:`analysis.collect`); a row without that list belongs to its ``experiment``.
    """
    if experiment is None:
        return frame
    wanted = {experiment} if isinstance(experiment, str) else set(experiment)
    own = frame["experiment"].isin(wanted)
    if EXPERIMENTS not in frame.columns:
        return frame[own]
    listed = frame[EXPERIMENTS].map(lambda e: bool(wanted & set(e)) if is_list(e) else False)
    return frame[own | listed]


def add_experiment_option(parser) -> None:
    """``--experiment`` for the analysis commands: once for one experiment's rows, repeated
    to read several together (:func:`select`); :func:`chosen` gives what ``select`` takes."""
    parser.add_argument(
        "--experiment",
        action="append",
        default=None,
        help="only rows of this experiment (repeat to read several together, e.g. "
        "cpu_smollm2_seeds and cpu_smollm2_seeds_authors)",
    )


def chosen(experiments: list[str] | None) -> str | list[str] | None:
    if experiments is not None and len(experiments) == 1:
        return experiments[0]
    return experiments


def is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def replayed(runs: pd.DataFrame) -> pd.Series:
    """Which runs replayed another run's plan (``plan_from``, :mod:`twossp.reuse`): they pruned
    nothing, and their ``prune_seconds`` are the source run's, not a new timing."""
    if "plan_from" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["plan_from"].notna()


def with_sparsity(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus a ``sparsity`` column: the target rounded to 4 places, 0 for dense
    (whose one run serves every sparsity)."""
    target = frame["target_sparsity"].astype(float).round(4)
    return frame.assign(sparsity=target.where(frame["method"] != DENSE, 0.0))


def sparsity_label(s: float) -> str:
    return f"{100 * s:g}%"


def show(value) -> str:
    """A setting's value as the error messages print it."""
    if missing(value):
        return "null"
    if is_list(value) or isinstance(value, dict):
        return json.dumps(list(value) if is_list(value) else value, default=str)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _sort_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


# A local file recorded as ``local:<path>`` (runs before files were named by fingerprint) and
# as ``local:<file name>@<fingerprint>`` (runs since) is one setting when the file names agree:
# a cell's values drop the older form (:func:`_spread`), so only real differences remain.
LOCAL = "local:"


def _named(value: str) -> str:
    """``local:<path>`` as ``local:<file name>``."""
    return LOCAL + PurePath(value.removeprefix(LOCAL)).name


def _spread(values) -> list[str]:
    shown = {show(v) for v in values}
    named = {v.split("@")[0] for v in shown if v.startswith(LOCAL) and "@" in v}
    shown -= {v for v in shown if v.startswith(LOCAL) and "@" not in v and _named(v) in named}
    return sorted(shown, key=_sort_key)


def differing_settings(rows: pd.DataFrame, variant: bool = True) -> list[tuple[str, list[str]]]:
    """The settings in which the configurations of ``rows`` differ, with their values.

    ``variant``: also compare the evaluation settings in each row's ``variant`` (one row per
    configuration is compared, so pass the rows of one cell).
    """
    per_config = rows.drop_duplicates("config_hash")
    out = []
    for col in per_config.columns:
        if col in NOT_SETTINGS:
            continue
        shown = _spread(per_config[col])
        if len(shown) > 1:
            out.append((col, shown))
    if not variant or "variant" not in per_config.columns:
        return out
    variants = [json.loads(v) if isinstance(v, str) and v else {} for v in per_config["variant"]]
    for key in sorted(set().union(*variants) - VARIANT_RESULTS):
        shown = _spread(v.get(key) for v in variants)
        if len(shown) > 1:
            out.append((f"variant.{key}", shown))
    return out


def differing_outcomes(rows: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The pruning outcomes (achieved sparsity, parameters, attention removed) in which the
    runs of ``rows`` differ."""
    per_run = rows.drop_duplicates(["config_hash", "run_id"])
    out = []
    for col in OUTCOMES:
        if col in per_run.columns:
            shown = _spread(per_run[col])
            if len(shown) > 1:
                out.append((col, shown))
    return out


def cell_label(key: list[str], values: tuple) -> str:
    named = dict(zip(key, values, strict=True))
    parts = []
    for col, v in named.items():
        if col in ("metric", "dataset"):
            continue
        parts.append(sparsity_label(v) if col == "sparsity" else show(v))
    if "metric" in named:
        dataset = named.get("dataset")
        parts.append(named["metric"] + (f"/{dataset}" if isinstance(dataset, str) else ""))
    return "(" + ", ".join(parts) + ")"


def _listing(diffs: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{c} ({', '.join(vs)})" for c, vs in diffs)


ABLATION_HINT = (
    "render them with an ablation view (python -m analysis.tables --experiment <ablation>) "
    "or select one experiment"
)
EVAL_HINT = (
    "they were scored with different evaluation settings: select one experiment "
    "(--experiment NAME) or evaluate the runs alike"
)


def _why(rows: pd.DataFrame, variant: bool) -> tuple[str, str] | None:
    """Why the configurations of one cell cannot be combined, and what to do (None: they
    can)."""
    diffs = differing_settings(rows, variant)
    if diffs:
        hint = EVAL_HINT if all(c.startswith("variant.") for c, _ in diffs) else ABLATION_HINT
        return "differ in " + _listing(diffs), hint
    outcomes = differing_outcomes(rows)
    if outcomes:
        hashes = ", ".join(sorted(rows["config_hash"].unique()))
        what = f"differ in no recorded setting (config hashes {hashes}) but pruned differently: "
        return what + _listing(outcomes), "rerun them (force=true) or select one experiment"
    return None


def unique_cells(
    rows: pd.DataFrame, key: list[str], table: str, *, variant: bool = True, split: bool = False
) -> pd.DataFrame:
    """``rows`` with one row per ``key``; raises when a key holds several configurations.

    One run copied under several config hashes (dense across a sparsity sweep, as older code
    did) is one measurement, not several configurations. Configurations that agree on every
    recorded setting and pruned alike are one measurement made by several runs (e.g. a plain
    run and one with ``eval=downstream``): the cell keeps the newest run's row
    (``created_at``, then ``run_id``). The result's ``attrs[COMBINED]`` lists such cells with
    the values their runs gave, for :func:`combined_note`.

    Args:
        rows: candidate rows with the ``key`` columns.
        key: the columns that name a cell.
        table: the table's name, for the error message.
        variant: compare the rows' evaluation settings (``variant``); off for per-run tables
            (achieved sparsity, pruning time), whose rows may be of different metrics.
        split: a user's own runs (:func:`strict` is False): configurations that differ in a
            setting become setting groups (:func:`split_settings`) instead of an error; the
            result has a :data:`SETTING` column ("" when nothing was split) and one row per
            ``key`` and group.

    Raises:
        AmbiguousCellError: the first cell fed by configurations that differ in a recorded
            setting (named with its values) or that pruned differently (also with ``split``).
    """
    rows = rows.drop_duplicates([*key, "run_id"])
    if split:
        rows = split_settings(rows, key, variant=variant)
        key = [*key, SETTING]
    if rows.empty:
        return rows
    keep = np.ones(len(rows), dtype=bool)
    refused: list[tuple[tuple, int, tuple[str, str]]] = []
    combined: list[dict] = []
    for cell, where in rows.groupby(key, dropna=False, sort=False).indices.items():
        sub = rows.iloc[where]
        n = sub["config_hash"].nunique()
        if n < 2:
            continue
        why = _why(sub, variant)
        if why is not None:
            refused.append((cell if isinstance(cell, tuple) else (cell,), n, why))
            continue
        runs = sub[["created_at", "run_id"]].assign(position=where)
        newest = runs.sort_values(["created_at", "run_id"], na_position="first")["position"]
        newest = newest.iloc[-1]
        keep[where] = False
        keep[newest] = True
        if "value" in sub.columns:
            combined.append({"cell": cell, "values": [float(v) for v in sub["value"]]})
    if refused:
        cell, n, why = refused[0]
        what, hint = why
        more = f" ({len(refused) - 1} more such cells)" if len(refused) > 1 else ""
        raise AmbiguousCellError(
            f"{table}: cell {cell_label(key, cell)} holds {n} configurations that "
            f"{what}{more}; {hint}"
        )
    out = rows[keep].reset_index(drop=True)
    out.attrs[COMBINED] = combined
    return out


def combined_note(rows: pd.DataFrame, rel_tol: float = 1e-9) -> str | None:
    """A note when runs combined into one cell (see :func:`unique_cells`) gave different
    values, e.g. on hardware whose kernels are not deterministic; None when they agree."""
    combined = rows.attrs.get(COMBINED) or []
    spreads = []
    for c in combined:
        low, high = min(c["values"]), max(c["values"])
        if high - low > rel_tol * max(abs(low), abs(high)):
            spreads.append((high - low) / max(abs(low), 1e-300))
    if not spreads:
        return None
    return (
        f"{len(spreads)} cell(s) were measured by several runs with the same recorded settings "
        f"whose values differ by up to {100 * max(spreads):.2g}%; the newest run is shown."
    )


# --- a user's own runs: setting groups instead of refusals ---------------------------------


def _setting_rank(setting: str) -> tuple:
    """The order in which settings are considered for a group's label: method settings,
    calibration, evaluation settings a user sets, the other recorded columns, then what
    other settings imply."""
    if setting.startswith("variant."):
        return (2, setting) if setting[8:] in VARIANT_SETTINGS else (5, setting)
    if setting in DERIVED:
        return (4, setting)
    if setting.startswith("method."):
        return (0, setting)
    return (1, setting) if setting.startswith("calib_") else (3, setting)


def setting_name(setting: str) -> str:
    """A setting as a user sets it: ``variant.max_windows`` -> ``eval.max_windows``,
    ``calib_n_samples`` -> ``calib.n_samples``; others as recorded."""
    if setting.startswith("variant."):
        return VARIANT_SETTINGS.get(setting[8:], setting)
    if setting.startswith("calib_"):
        return "calib." + setting[6:]
    return setting


def _variants(rows: pd.DataFrame) -> list[dict]:
    out = []
    for v in rows["variant"] if "variant" in rows.columns else [None] * len(rows):
        try:
            parsed = json.loads(v) if isinstance(v, str) and v else {}
        except ValueError:
            parsed = {}
        out.append(parsed if isinstance(parsed, dict) else {})
    return out


def _row_settings(rows: pd.DataFrame, settings: list[str]) -> list[tuple]:
    """Each row's shown value of every setting, None where the setting does not apply to
    it: a variant key the row lacks, or a column no row of the row's method fills."""
    variants = _variants(rows) if any(s.startswith("variant.") for s in settings) else []
    methods = rows["method"].tolist()
    applies = {
        s: set(rows.loc[rows[s].map(lambda v: not missing(v)), "method"])
        for s in settings
        if not s.startswith("variant.")
    }
    out = []
    for i in range(len(rows)):
        values = []
        for s in settings:
            if s.startswith("variant."):
                k = s[8:]
                values.append(show(variants[i][k]) if k in variants[i] else None)
            else:
                values.append(show(rows[s].iat[i]) if methods[i] in applies[s] else None)
        out.append(tuple(values))
    return out


def _covers(group: tuple, values: tuple) -> bool:
    return all(v is None or v == g for v, g in zip(values, group, strict=True))


def _group_labels(settings: list[str], groups: list[tuple]) -> list[str]:
    """``"eval.max_windows=8"``: each group named by the fewest settings (in
    :func:`_setting_rank` order) that tell the groups apart."""
    chosen: list[int] = []
    for i in range(len(settings)):
        before = len({tuple(g[j] for j in chosen) for g in groups})
        if len({tuple(g[j] for j in [*chosen, i]) for g in groups}) > before:
            chosen.append(i)

    def text(g: tuple, among) -> str:
        return ", ".join(f"{setting_name(settings[j])}={g[j]}" for j in among if g[j] is not None)

    labels = [text(g, chosen) or text(g, range(len(settings))) for g in groups]
    if len(set(labels)) < len(labels):
        labels = [text(g, range(len(settings))) for g in groups]
    return labels


def _group_order(group: tuple) -> tuple:
    return tuple((2, 0.0, "") if v is None else _sort_key(v) for v in group)


def split_settings(rows: pd.DataFrame, key: list[str], variant: bool = True) -> pd.DataFrame:
    """``rows`` with a :data:`SETTING` column: the setting group of each row.

    The settings are those in which the configurations of some cell (``key``) differ
    (:func:`differing_settings`). Every row has a value for each (None where it does not
    apply: :func:`_row_settings`); the groups are the most specific combinations of values
    found, and a row goes to every group that agrees with it where it has a value (so a
    method without ``method.alpha``, or dense, appears beside each alpha). Groups are
    labelled by :func:`_group_labels`; "" for every row when no cell needs a split.
    """
    settings: list[str] = []
    if len(rows):
        for where in rows.groupby(key, dropna=False, sort=False).indices.values():
            sub = rows.iloc[where]
            if sub["config_hash"].nunique() > 1:
                for col, _ in differing_settings(sub, variant):
                    if col not in settings:
                        settings.append(col)
    if not settings:
        return rows.assign(**{SETTING: ""})
    settings.sort(key=_setting_rank)
    values = _row_settings(rows, settings)
    distinct = list(dict.fromkeys(values))
    groups = [
        t for t in distinct if not any(u != t and _covers(u, t) for u in distinct)
    ]  # the most specific combinations
    groups.sort(key=_group_order)
    labels = _group_labels(settings, groups)
    positions, named = [], []
    for i, v in enumerate(values):
        for g, label in zip(groups, labels, strict=True):
            if _covers(g, v):
                positions.append(i)
                named.append(label)
    return rows.iloc[positions].assign(**{SETTING: named}).reset_index(drop=True)


def split_labels(rows: pd.DataFrame) -> list[str]:
    """The setting groups of split rows, in order (none when nothing was split)."""
    if SETTING not in rows.columns:
        return []
    return sorted({s for s in rows[SETTING] if s}, key=natural_key)


def row_key(rows: pd.DataFrame) -> list[str]:
    """A table's row levels: :data:`analysis.order.ROW_KEY`, with :data:`SETTING` before the
    method when the rows were split into setting groups (so that bold and ties compare the
    methods of one group)."""
    if split_labels(rows):
        return [*ROW_KEY[:-1], SETTING, ROW_KEY[-1]]
    return list(ROW_KEY)


def split_note(rows: pd.DataFrame) -> list[str]:
    """The caption's sentence on setting groups (none when nothing was split)."""
    labels = split_labels(rows)
    if not labels:
        return []
    return [
        "Runs whose configurations differ in a setting are split into setting groups "
        f"({'; '.join(labels)}); methods are compared within a group, and a run a setting does "
        "not apply to (dense, another method's setting) appears in each group."
    ]
