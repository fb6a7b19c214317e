"""The project's modules import one way: every module imports in a fresh interpreter, and the
graph of imports between project modules (read from the source, imports inside functions
included) has no cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twossp", "baselines", "analysis", "bench", "experiments")


def project_modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of :data:`PACKAGES` (a package is its
    ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(module: str, level: int, here: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``here``."""
    if level == 0:
        return module
    base = here.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file. ``from p import m`` counts
    as importing ``p.m`` when that is a module, else ``p``; importing ``a.b.c`` counts ``a.b.c``
    only (its parents are packages whose ``__init__`` runs first, not a dependency of the
    importer's own code)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One closed path through ``component``, for the failure message."""
    inside = set(component)
    path, seen = [component[0]], {component[0]}
    while True:
        nxt = sorted(graph[path[-1]] & inside)
        back = [n for n in nxt if n == component[0]]
        step = next((n for n in nxt if n not in seen), None)
        if back and len(path) > 1 or step is None:
            return " -> ".join([*path, component[0]])
        path.append(step)
        seen.add(step)


def test_no_two_project_modules_import_each_other():
    graph = import_graph()
    assert len(graph) > 40 and "analysis.tables" in graph  # the scan found the project
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(_cycle_path(graph, c) for c in found)


def test_analysis_modules_import_only_those_listed_above_them():
    # analysis/README.md lists the modules in dependency order; keep the list honest.
    text = (ROOT / "analysis" / "README.md").read_text().split("## Modules", 1)[1]
    listed = [f"analysis.{m}" for m in re.findall(r"^\| `(\w+)\.py` \|", text, flags=re.M)]
    graph = import_graph()
    ours = sorted(n for n in graph if n.startswith("analysis."))
    assert sorted(listed) == ours, "analysis/README.md's module list differs from analysis/"
    for i, name in enumerate(listed):
        below = sorted(graph[name] & set(listed[i:]))
        assert not below, f"{name} imports {below}, listed below it in analysis/README.md"


def test_the_scan_sees_function_level_and_relative_imports(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    b = tmp_path / "b.py"
    b.write_text("from . import a\n")
    modules = {"pkg": tmp_path, "pkg.a": a, "pkg.b": b}
    graph = {n: imports_of(n, p, modules) for n, p in modules.items() if n != "pkg"}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert _cycle_path(graph, ["pkg.a", "pkg.b"]) == "pkg.a -> pkg.b -> pkg.a"


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(project_modules())
    code = (
        "import importlib, sys\n"
        "for n in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as exc:\n"
        "        sys.exit(f'{n}: {type(exc).__name__}: {exc}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
