"""One results page of several experiments, each its own part.

Experiments that differ in a setting (budgets, calibration draws, evaluation units) cannot
share one table: each cell would hold several configurations. This page keeps them apart:
first the paper's claims as each part judges them, then each part's sweep and its wall time,
then (``--rank A:B``) whether two parts order the pruned methods differently
(:mod:`analysis.ranking`), then every part: the opening comment of its configuration (what it
ran and what it reduced against the paper) and its own page
(:func:`analysis.report.render_part`), its headings one level down. Like every page it is
recomputed from the record alone, byte for byte, and ``--logger wandb`` logs every part's
tables (named ``<part>/<table>``) to one W&B summary run.

    python -m analysis.combined --name smollm2 --part cpu_smollm2_authors \\
        --part cpu_smollm2_authors_draws --part cpu_smollm2_authors_downstream \\
        --part cpu_smollm2 --rank cpu_smollm2_authors:cpu_smollm2

``make smollm2-page`` writes the SmolLM2 page from the committed record.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from analysis import comparison, ranking
from analysis.cells import select
from analysis.report import (
    PAGES,
    RECORD,
    _shown,
    _span,
    claims,
    load_record,
    log_to_wandb,
    paired_view,
    pruning_seconds,
    render_part,
    wall_time,
)
from twossp.config import CONF

log = logging.getLogger(__name__)

HEADER_LINES = 4  # a part page's title, blank, generated-by line, blank


def _demoted(text: str) -> str:
    """A part's page without its own title and generated-by line, headings one level down."""
    lines = text.splitlines()[HEADER_LINES:]
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in lines)


def description(part: str) -> list[str]:
    """The opening comment of ``conf/experiment/<part>.yaml`` (what the part ran and what it
    reduced against the paper) as a quote, its command lines left out."""
    path = CONF / "experiment" / f"{part}.yaml"
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].removeprefix(" ")
        if text.startswith("@package") or text.strip().startswith(("python ", "make ")):
            continue
        in_list = bool(lines) and lines[-1].startswith(("> -", ">  "))
        if in_list and not text.startswith(("-", " ")):
            lines.append(">")  # the list ends: a paragraph, not the last item's continuation
        lines.append(f"> {text}".rstrip())
    return [f"From `conf/experiment/{part}.yaml`:", "", *lines, ""] if lines else []


def sweeps(frame: pd.DataFrame, parts: list[str]) -> list[str]:
    """One row per part: its runs, when they were written, their wall time and pruning time."""
    lines = [
        "| part | runs | written | wall time | pruning time |",
        "|---|---:|---|---|---:|",
    ]
    for part in parts:
        runs = select(frame, part).drop_duplicates("config_hash")
        lines.append(
            f"| `{part}` | {len(runs)} | {_span(runs['created_at'])} | {wall_time(runs)} | "
            f"{pruning_seconds(runs):.0f} s |"
        )
    return lines


def rank_pair(text: str) -> tuple[str, str]:
    """``FIRST:SECOND`` as a pair of experiment names."""
    first, sep, second = text.partition(":")
    if not sep or not first or not second:
        raise ValueError(f"--rank takes FIRST:SECOND (two experiments), got {text!r}")
    return first, second


def build(
    name: str,
    parts: list[str],
    ranks: list[tuple[str, str]],
    record: Path = RECORD,
    out: Path = PAGES,
    reference: str = comparison.REFERENCE,
):
    """The page's Markdown, every part's tables (named ``<part>/<table>``) and its plots."""
    frame, items = load_record(record)
    missing = [p for p in {*parts, *(e for pair in ranks for e in pair)} if select(frame, p).empty]
    if missing:
        raise ValueError(f"no runs of {sorted(missing)} under {_shown(record)}")
    command = " ".join(f"--part {p}" for p in parts)
    command += "".join(f" --rank {a}:{b}" for a, b in ranks)
    if Path(record).resolve() != RECORD.resolve():
        command += f" --record {_shown(record)}"
    lines = [
        f"# Results: {name}",
        "",
        f"_Generated from the record in `{_shown(record)}/` by `python -m analysis.combined "
        f"--name {name} {command}`; do not edit by hand. Every number below is recomputed from "
        "the run files, and every verdict comes from a paired test._",
        "",
        "Parts (each an experiment, its settings and reductions in "
        "`conf/experiment/<name>.yaml`): " + ", ".join(f"[`{p}`](#part-{p})" for p in parts),
        "",
        "## The paper's claims, part by part",
        "",
    ]
    rendered, tables, plots = [], [], []
    for part in parts:
        text, part_tables, part_plots = render_part(
            part, frame, items, [part], out, reference, record
        )
        rendered.append(text)
        tables += [dataclasses.replace(t, name=f"{part}/{t.name}") for t in part_tables]
        plots += part_plots
        found = paired_view(frame, items, reference, [part])
        lines += [f"`{part}`:", "", *claims(found, frame, items, [part]), ""]
    lines += ["## Each sweep", "", *sweeps(frame, parts), ""]
    for first, second in ranks:
        lines += [
            f"## Ranking: `{first}` against `{second}`",
            "",
            *ranking.ranking_lines(frame, items, first, second),
            "",
        ]
    for part, text in zip(parts, rendered, strict=True):
        lines += [f'<a id="part-{part}"></a>', "", f"## Part: `{part}`", "", *description(part)]
        lines += [_demoted(text), ""]
    return "\n".join(lines).rstrip() + "\n", tables, plots


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write one results page of several parts.")
    parser.add_argument("--name", required=True, help="the page's name (<out>/<name>.md)")
    parser.add_argument("--part", action="append", required=True, help="an experiment")
    parser.add_argument("--rank", action="append", default=[], help="FIRST:SECOND")
    parser.add_argument("--record", type=Path, default=RECORD, help="a results folder")
    parser.add_argument("--out", type=Path, default=PAGES, help="where pages are written")
    parser.add_argument("--reference", default=comparison.REFERENCE)
    parser.add_argument("--logger", choices=("none", "wandb"), default="none")
    args = parser.parse_args(argv)
    try:
        ranks = [rank_pair(r) for r in args.rank]
        text, tables, plots = build(
            args.name, args.part, ranks, args.record, args.out, args.reference
        )
    except ValueError as exc:
        print(f"[combined] error: {exc}", file=sys.stderr)
        sys.exit(2)
    page = args.out / f"{args.name}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    print(f"[combined] wrote {page} ({len(args.part)} parts, {len(tables)} tables)")
    if args.logger == "wandb":
        from twossp.tracking import WandbSettings

        settings = WandbSettings(
            mode=os.environ.get("WANDB_MODE", "online"), dir=os.environ.get("WANDB_DIR")
        )
        sentences = [line[2:] for line in text.splitlines() if line.startswith("- ")]
        folder = log_to_wandb(page.stem, tables, plots, sentences, settings)
        print(f"[combined] W&B ({settings.mode}): {len(tables)} tables {folder}")
    return page


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
