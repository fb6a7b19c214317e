"""What pruning buys at run time: a speed-up table and the perplexity / speed frontier.

Reads the inference rows runs record with ``eval.inference=true``
(:mod:`twossp.evaluation.inference`): prefill latency, decode throughput, KV-cache bytes per
token and weight bytes. Each pruned run is compared with the dense run of the same model and
machine (device name, dtype, threads, batch size) and the same measurement (prefill length,
prompt and new tokens), preferring the dense run of the same protocol (a dense model is the
same under both protocols, so another protocol's dense run stands in when that is all there
is, and the table says so).

- ``inference_speedup`` (md + tex): per model / protocol / method / sparsity, the parameters
  removed (whole model), prefill ms and speed-up, decode tokens/s and speed-up, KV cache
  bytes per token and the share saved, next to WikiText-2 perplexity.
- ``ppl_vs_prefill_speedup_<model>_<protocol>.png``: perplexity against measured prefill
  speed-up, a marker per method, a colour per sparsity, dense at 1x: the frontier.

A row is one configuration on one machine; a user's own runs that differ in a setting
(``split``) get a ``setting`` level as in the other tables (:func:`analysis.cells.unique_cells`
on each run's perplexity row), a published experiment's are refused.

``python -m analysis.tables`` and ``python -m analysis.plots`` call :func:`render_tables` and
:func:`render_plots`; both write nothing when no run has inference rows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from analysis.cells import (
    DENSE,
    SETTING,
    AmbiguousCellError,
    sparsity_label,
    split_labels,
    split_note,
    unique_cells,
    with_sparsity,
)
from analysis.order import METHOD_ORDER, ordered, row_index
from analysis.render import Table, render

log = logging.getLogger(__name__)

NAME = "inference_speedup"
PREFILL, DECODE = "prefill_latency", "decode_throughput"
KV, WEIGHTS = "kv_cache_bytes_per_token", "weight_bytes"
METRICS = (PREFILL, DECODE, KV, WEIGHTS)
# What a figure depends on besides the model: runs differing here are never compared.
MACHINE = ("device", "device_name", "dtype", "threads", "batch_size")
# How the figures were measured: a dense run must match these too.
MEASURE = ("seqlen", "prompt_tokens", "new_tokens")
KEY = ["model", "protocol", "method", "sparsity"]
PPL_DATASET = "wikitext2"
COLUMNS = [
    ("params removed %", 1),
    ("prefill ms", 2),
    ("prefill x", 2),
    ("decode tok/s", 1),
    ("decode x", 2),
    ("KV B/token", 0),
    ("KV saved %", 1),
    ("ppl wikitext2", 2),
]


def _variant(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return {}


def runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run that has inference rows: its configuration, machine, and figures.

    Columns: ``config_hash``, ``model``, ``protocol``, ``method``, ``sparsity``,
    ``params_before``, ``params_after``, ``machine`` (a tuple of :data:`MACHINE`),
    ``measure`` (a tuple of :data:`MEASURE`), ``prefill_ms``, ``decode_tps``, ``kv_bytes``,
    ``weight_bytes`` and ``ppl`` (WikiText-2, else the first perplexity corpus).
    """
    if frame.empty or "metric" not in frame.columns:
        return pd.DataFrame()
    rows = with_sparsity(frame)
    timed = rows[rows["metric"].isin(METRICS)]
    if timed.empty:
        return pd.DataFrame()
    out = []
    for config_hash, own in timed.groupby("config_hash", sort=False):
        run_id = own.sort_values("created_at")["run_id"].iloc[-1] if "created_at" in own else None
        if run_id is not None:
            own = own[own["run_id"] == run_id]
        first = own.iloc[0]
        values = {m: own.loc[own["metric"] == m, "value"] for m in METRICS}
        variants = {
            m: _variant(own.loc[own["metric"] == m, "variant"].iloc[0])
            for m in METRICS
            if len(values[m])
        }
        machine_of = variants.get(PREFILL) or next(iter(variants.values()))
        measure = {**variants.get(PREFILL, {}), **variants.get(DECODE, {})}
        ppl = rows[(rows["config_hash"] == config_hash) & (rows["metric"] == "ppl")]
        if run_id is not None:
            ppl = ppl[ppl["run_id"] == run_id]
        wiki = ppl[ppl["dataset"] == PPL_DATASET]
        chosen = wiki if len(wiki) else ppl
        out.append(
            {
                "config_hash": config_hash,
                **{k: first[k] for k in KEY},
                "params_before": first["params_before"],
                "params_after": first["params_after"],
                "machine": tuple(machine_of.get(k) for k in MACHINE),
                "measure": tuple(measure.get(k) for k in MEASURE),
                "prefill_ms": _first(values[PREFILL]),
                "decode_tps": _first(values[DECODE]),
                "kv_bytes": _first(values[KV]),
                "weight_bytes": _first(values[WEIGHTS]),
                "ppl": _first(chosen["value"]),
                "ppl_dataset": chosen["dataset"].iloc[0] if len(chosen) else None,
            }
        )
    return pd.DataFrame(out)


def _first(series: pd.Series) -> float:
    return float(series.iloc[0]) if len(series) else float("nan")


def with_dense(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (from :func:`runs`) plus the matching dense run's figures (``dense_*``) and
    ``dense_protocol`` (which protocol's dense run it is); NaN where none matches. Among the
    matching dense runs, one of the row's own setting group (:data:`SETTING`, when split) is
    preferred, then one of its protocol."""
    dense = table[table["method"] == DENSE]
    group = SETTING in table.columns
    picked = []
    for r in table.itertuples(index=False):
        same = dense[
            (dense["model"] == r.model)
            & (dense["machine"] == r.machine)
            & (dense["measure"] == r.measure)
        ]
        if group and len(same):
            rank = (same[SETTING] != getattr(r, SETTING)).astype(int) * 2
            rank += (same["protocol"] != r.protocol).astype(int)
            same = same.assign(_rank=rank.to_numpy()).sort_values("_rank", kind="stable")
            picked.append(same.iloc[0])
            continue
        own = same[same["protocol"] == r.protocol]
        pick = own if len(own) else same
        picked.append(pick.iloc[0] if len(pick) else None)
    out = table.copy()
    for col in ("prefill_ms", "decode_tps", "kv_bytes", "protocol"):
        out[f"dense_{col}"] = [p[col] if p is not None else None for p in picked]
    out["prefill_speedup"] = out["dense_prefill_ms"].astype(float) / out["prefill_ms"]
    out["decode_speedup"] = out["decode_tps"] / out["dense_decode_tps"].astype(float)
    out["kv_saved"] = 1.0 - out["kv_bytes"] / out["dense_kv_bytes"].astype(float)
    out["params_removed"] = 1.0 - out["params_after"] / out["params_before"]
    return out


def _machine_label(machine: tuple) -> str:
    d = dict(zip(MACHINE, machine, strict=True))
    return (
        f"{d['device_name'] or d['device']}, {d['dtype']}, {d['threads']} threads, "
        f"batch {d['batch_size']}"
    )


def _grouped(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a :data:`SETTING` column: each run's perplexity row (else its first
    inference row, without its measurements) split like a table cell per (model, protocol,
    method, sparsity, machine); runs with equal settings share a row (the newest), and a run a
    differing setting does not apply to appears in every group."""
    rows = with_sparsity(frame)
    picked = []
    for r in table.itertuples(index=False):
        own = rows[rows["config_hash"] == r.config_hash]
        ppl = own[(own["metric"] == "ppl") & (own["dataset"] == r.ppl_dataset)]
        one = ppl.sort_values("created_at").iloc[[-1]] if len(ppl) else None
        if one is None:
            one = own[own["metric"].isin(METRICS)].sort_values("created_at").iloc[[-1]]
            one = one.assign(variant=None)
        picked.append(one.assign(cell=repr((*[getattr(r, k) for k in KEY], r.machine))))
    found = unique_cells(pd.concat(picked, ignore_index=True), ["cell"], NAME, split=True)
    return table.merge(found[["config_hash", SETTING]], on="config_hash", how="inner")


def speedup_table(frame: pd.DataFrame, split: bool = False) -> Table | None:
    """The ``inference_speedup`` table, or None when no run has inference rows.

    Args:
        frame: the rows to read (one experiment's).
        split: a user's own runs (:func:`analysis.cells.strict` is False): configurations
            that differ in a setting become setting groups instead of an error.

    Raises:
        AmbiguousCellError: two configurations feed one row on one machine (a sweep over a
            method setting) and ``split`` is off: select one experiment.
    """
    table = runs(frame)
    if table.empty:
        return None
    machines = list(dict.fromkeys(table["machine"]))
    key = [*KEY, "machine"]
    counts = table.groupby(key, sort=False)["config_hash"].nunique()
    if (counts > 1).any() and not split:
        cell = counts[counts > 1].index[0]
        raise AmbiguousCellError(
            f"{NAME}: {dict(zip(key, cell, strict=True))} holds {counts.max()} "
            "configurations; select one experiment"
        )
    table = _grouped(frame, table) if (counts > 1).any() else table
    table = with_dense(table)
    table = table if SETTING in table.columns else table.assign(**{SETTING: ""})
    grouped = bool(split_labels(table))
    levels = ["model", "protocol", *([SETTING] if grouped else []), "method"]
    names = [*levels, "sparsity"] + (["machine"] if len(machines) > 1 else [])
    table = table.assign(
        sparsity_text=[
            sparsity_label(s) if m != DENSE else "0%"
            for s, m in zip(table["sparsity"], table["method"], strict=True)
        ],
        machine_no=[machines.index(m) + 1 for m in table["machine"]],
    )
    order = row_index(table, levels)
    rank = {t: i for i, t in enumerate(order)}
    table = table.assign(
        _rank=[rank[t] for t in table[levels].itertuples(index=False, name=None)]
    ).sort_values(["_rank", "sparsity", "machine_no"])
    tuples = []
    for r in table.itertuples(index=False):
        t = (*[getattr(r, k) for k in levels], r.sparsity_text)
        tuples.append(t + ((f"#{r.machine_no}",) if len(machines) > 1 else ()))
    columns = [c for c, _ in COLUMNS]
    data = list(
        zip(
            100 * table["params_removed"],
            table["prefill_ms"],
            table["prefill_speedup"],
            table["decode_tps"],
            table["decode_speedup"],
            table["kv_bytes"],
            100 * table["kv_saved"],
            table["ppl"],
            strict=True,
        )
    )
    index = pd.MultiIndex.from_tuples(tuples, names=names)
    values = pd.DataFrame(data, index=index, columns=columns, dtype=float)
    text = pd.DataFrame(
        [[_fmt(v, d) for v, (_, d) in zip(row, COLUMNS, strict=True)] for row in data],
        index=index,
        columns=columns,
    )
    notes = [
        "Speed-ups (x) against the dense run of the same model, machine and measurement; "
        "prefill: one forward of the first evaluation window, median of the timed repeats; "
        "decode: greedy generate with the KV cache, batch 1, tokens per second of the decoding "
        "steps (the prompt's prefill and first token excluded); KV B/token: bytes each token "
        "adds to the cache (blocks that kept attention); params removed: the whole model's "
        "parameters.",
    ]
    notes += [f"machine #{i + 1}: {_machine_label(m)}" for i, m in enumerate(machines)]
    measures = sorted({m for m in table["measure"]}, key=str)
    notes += [
        "prefill over {} tokens; decode {} new tokens after a {}-token prompt".format(*m)
        for m in measures
    ]
    borrowed = table[
        (table["method"] != DENSE)
        & table["dense_protocol"].notna()
        & (table["dense_protocol"] != table["protocol"])
    ]
    if len(borrowed):
        notes.append(
            "dense reference from another protocol's run (the dense model is the same) for: "
            + ", ".join(sorted(set(borrowed["protocol"])))
        )
    missing = table[(table["method"] != DENSE) & table["dense_prefill_ms"].isna()]
    if len(missing):
        notes.append(f"{len(missing)} pruned run(s) have no matching dense run: no speed-up")
    dataset = set(table["ppl_dataset"].dropna())
    if dataset and dataset != {PPL_DATASET}:
        notes.append(f"perplexity on {', '.join(sorted(dataset))} (no WikiText-2 row)")
    notes += split_note(table)
    return Table(
        NAME,
        "What pruning buys: speed, KV cache, perplexity",
        values,
        None,
        2,
        notes,
        text,
    )


def _fmt(value: float, digits: int) -> str:
    if value is None or value != value:
        return ""
    return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def render_tables(frame: pd.DataFrame, out_dir: str | Path, split: bool = False) -> list[Path]:
    """Write the speed-up table (md + tex) when any run has inference rows (``split``: as in
    :func:`speedup_table`)."""
    table = speedup_table(frame, split)
    if table is None:
        return []
    print(table.to_markdown())
    return render([table], out_dir)


# --- the frontier plot -----------------------------------------------------------------------


def frontier_plot(table: pd.DataFrame, model: str, protocol: str, path: Path) -> Path | None:
    """Perplexity against prefill speed-up for one model and protocol (one machine: the
    first one listed when several measured it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.figures import MARKERS, save_png

    rows = table[(table["model"] == model) & (table["protocol"] == protocol)]
    rows = rows[rows["machine"] == rows["machine"].iloc[0]] if len(rows) else rows
    rows = rows[rows["prefill_speedup"].notna() & rows["ppl"].notna()]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    sparsities = sorted(rows.loc[rows["method"] != DENSE, "sparsity"].unique())
    colours = plt.get_cmap("viridis")(
        [i / max(1, len(sparsities) - 1) for i in range(len(sparsities))]
    )
    methods = [m for m in ordered(rows["method"], METHOD_ORDER) if m != DENSE]
    for r in rows[rows["method"] == DENSE].itertuples(index=False):
        ax.scatter([r.prefill_speedup], [r.ppl], marker="*", s=140, color="black", label="dense")
    for k, method in enumerate(methods):
        sub = rows[rows["method"] == method]
        for s, colour in zip(sparsities, colours, strict=True):
            point = sub[sub["sparsity"] == s]
            if len(point):
                ax.scatter(
                    point["prefill_speedup"],
                    point["ppl"],
                    marker=MARKERS[k % len(MARKERS)],
                    color=colour,
                    edgecolor="black",
                    linewidth=0.5,
                    s=50,
                    label=method,
                )
    ax.set_yscale("log")
    ax.set_xlabel("measured prefill speed-up over dense (x)")
    ax.set_ylabel(f"perplexity ({rows['ppl_dataset'].dropna().iloc[0]}, log scale)")
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    seen = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))

    shades = [
        Line2D([], [], marker="s", linestyle="", color=c, label=f"{sparsity_label(s)}")
        for s, c in zip(sparsities, colours, strict=True)
    ]
    legend_marks = [
        Line2D([], [], marker=MARKERS[k % len(MARKERS)], linestyle="", color="grey", label=m)
        for k, m in enumerate(methods)
    ]
    dense = [seen["dense"]] if "dense" in seen else []
    ax.legend(handles=dense + legend_marks + shades, fontsize=8, loc="best", ncol=2)
    ax.set_title(f"{model} ({protocol}): {_machine_label(rows['machine'].iloc[0])}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, path)
    plt.close(fig)
    return path


def render_plots(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write one frontier plot per model and protocol that has inference rows."""
    table = runs(frame)
    if table.empty:
        return []
    table = with_dense(table)
    paths = []
    for model, protocol in table[["model", "protocol"]].drop_duplicates().itertuples(index=False):
        path = Path(out_dir) / f"ppl_vs_prefill_speedup_{model}_{protocol}.png"
        written = frontier_plot(table, model, protocol, path)
        if written is not None:
            paths.append(written)
    return paths
