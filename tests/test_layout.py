"""Docs that list things stay complete: every core module in twossp/README.md, and no
Markdown table in the repository with its header row printed twice."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_core_module_is_in_the_package_table():
    table = (ROOT / "twossp" / "README.md").read_text()
    listed = set(re.findall(r"^\| `([\w/.]+)` \|", table, flags=re.M))
    modules = {p.name for p in (ROOT / "twossp").glob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.name}/" for p in (ROOT / "twossp").iterdir() if (p / "__init__.py").exists()}
    assert modules | packages == listed


def _markdown_files() -> list[Path]:
    skip = {".venv", ".git", "results", "node_modules", ".pytest_cache"}
    return [p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts)]


def test_no_markdown_table_repeats_its_header_row():
    doubled = []
    for path in _markdown_files():
        lines = path.read_text().splitlines()
        for i in range(1, len(lines)):
            if lines[i].startswith("|") and lines[i] == lines[i - 1]:
                doubled.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert not doubled


def test_the_readme_is_a_manual_not_a_notebook():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
