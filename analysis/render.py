"""Tables as Markdown and LaTeX: a :class:`Table` holds the numbers, which cells are bold
or tied, preformatted cell text and notes; this module only prints them.

Column labels are tuples (one header row per level in LaTeX, joined by spaces in Markdown).
Tables with published numbers beside ours end each label with ``"ours"`` or ``"paper"``
(:data:`OURS`, :data:`PAPER`): ``(paper)`` columns print as such, and the ``ours`` level is
dropped when no ``paper`` column exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

OURS, PAPER = "ours", "paper"


@dataclass
class Table:
    """A table to render: numeric values, a bold mask and how to print them.

    ``values`` has a row index with named levels (the last one varies fastest, e.g. method)
    and tuple column labels; for tables with a ``(paper)`` sibling the last level of each
    label is ``"ours"`` or ``"paper"``. ``text`` (same shape, optional) holds preformatted
    cells, e.g. ``"mean ± std (n=3)"``, used where not empty. ``tied`` (optional) marks cells
    tied with the best (:mod:`analysis.verdicts`), printed with a dagger; ``suffix``
    (optional, same shape) is printed after a cell's dagger, e.g. the detectable difference
    ``"(≥1.23x)"``.
    """

    name: str
    title: str
    values: pd.DataFrame
    bold: pd.DataFrame | None = None
    digits: int = 2
    notes: list[str] = field(default_factory=list)
    text: pd.DataFrame | None = None
    tied: pd.DataFrame | None = None
    suffix: pd.DataFrame | None = None

    def cell(self, i: int, j: int, bold_fmt: str = "{}", escape=str, tie_fmt: str = "{}†") -> str:
        text = self.text.iloc[i, j] if self.text is not None else ""
        if not text:
            v = self.values.iloc[i, j]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            text = f"{v:.{self.digits}f}"
        bold = self.bold is not None and bool(self.bold.iloc[i, j])
        text = escape(text)
        if self.tied is not None and bool(self.tied.iloc[i, j]):
            text = tie_fmt.format(text)
        extra = self.suffix.iloc[i, j] if self.suffix is not None else ""
        if extra:
            text = f"{text} {escape(extra)}"
        return bold_fmt.format(text) if bold else text

    def _cells(self, i: int, bold_fmt: str, escape=str, tie_fmt: str = "{}†") -> list[str]:
        n = self.values.shape[1]
        return [self.cell(i, j, bold_fmt, escape, tie_fmt) for j in range(n)]

    @property
    def row_names(self) -> list[str]:
        return [str(n) for n in self.values.index.names]

    def _labels(self) -> list[tuple]:
        """Column labels without the ``ours`` level when no ``paper`` column exists."""
        cols = [c if isinstance(c, tuple) else (c,) for c in self.values.columns]
        if cols and all(c[-1] in (OURS, PAPER) for c in cols):
            if all(c[-1] == OURS for c in cols):
                return [c[:-1] for c in cols]
        return cols

    def headers(self) -> list[str]:
        out = []
        for col in self._labels():
            if col[-1] == PAPER:
                out.append("(paper)")
            else:
                out.append(" ".join(str(p) for p in (col[:-1] if col[-1] == OURS else col)))
        return out

    def to_markdown(self) -> str:
        names = self.row_names
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join([*names, *self.headers()]) + " |",
            "|" + "---|" * len(names) + "---:|" * self.values.shape[1],
        ]
        for i, row in enumerate(self.values.index):
            row = row if isinstance(row, tuple) else (row,)
            cells = [*map(str, row), *self._cells(i, "**{}**")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_latex(self) -> str:
        names = self.row_names
        cols = self._labels()
        depth = max(len(c) for c in cols)
        cols = [c + ("",) * (depth - len(c)) for c in cols]
        k = len(names)
        out = [
            f"% {self.title}",
            *[f"% {n}" for n in self.notes],
            "\\begin{tabular}{" + "l" * k + "r" * len(cols) + "}",
            "\\toprule",
        ]
        for level in range(depth):
            cells, rules, i = [""] * k, [], 0
            while i < len(cols):
                j = i
                while j + 1 < len(cols) and cols[j + 1][: level + 1] == cols[i][: level + 1]:
                    j += 1
                label = "(paper)" if cols[i][level] == PAPER else _tex(cols[i][level])
                label = "" if cols[i][level] == OURS else label
                span = j - i + 1
                cells.append(f"\\multicolumn{{{span}}}{{c}}{{{label}}}" if span > 1 else label)
                if span > 1 and level < depth - 1:
                    rules.append(f"\\cmidrule(lr){{{i + k + 1}-{j + k + 1}}}")
                i = j + 1
            if level == depth - 1:
                cells[:k] = [_tex(n) for n in names]
            out.append(" & ".join(cells) + " \\\\")
            out.extend(rules)
        out.append("\\midrule")
        previous = None
        for i, row in enumerate(self.values.index):
            row = row if isinstance(row, tuple) else (row,)
            if previous is not None and row[:-1] != previous:
                out.append("\\midrule")
            previous = row[:-1]
            cells = self._cells(i, "\\textbf{{{}}}", _tex, "{}$^\\dagger$")
            out.append(" & ".join([*map(_tex, row), *cells]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(out) + "\n"


def _tex(text) -> str:
    text = str(text)
    for a, b in (
        ("\\", "\\textbackslash{}"),
        ("_", "\\_"),
        ("%", "\\%"),
        ("&", "\\&"),
        ("#", "\\#"),
        ("±", "$\\pm$"),
        ("≥", "$\\geq$"),
        ("×", "$\\times$"),
    ):
        text = text.replace(a, b)
    return text


def render(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """Write each table as ``<name>.md`` and ``<name>.tex`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        for suffix, text in ((".md", t.to_markdown()), (".tex", t.to_latex())):
            path = out_dir / f"{t.name}{suffix}"
            path.write_text(text)
            paths.append(path)
    return paths
