"""Imports run one way: no module imports itself back through others, and no package through other packages.

The graph is read from the source (nothing is imported), lazy imports and TYPE_CHECKING imports included: a
dependency put off until a function runs is still a dependency. Where the team's shared tool is checked out beside
the repository it must agree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medflow"
TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "layers.py"


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that the module name imports, resolved to the longest known prefix."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import module`
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node, by iterative Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def graphs(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module graph, package graph). A package is medflow.<first part>: a top-level module is its own package,
    and an __init__ importing its own submodules is no cycle of theirs."""
    mods = modules(root)
    deps = {m: imported(m, p, set(mods)) for m, p in mods.items()}
    top = root.name

    def package(m: str) -> str:
        return ".".join(m.split(".")[:2])

    module_graph = {m: {d for d in ds if mods[d].name != "__init__.py"} for m, ds in deps.items()}
    package_graph: dict[str, set[str]] = {}
    for m, ds in deps.items():
        for d in ds:
            a, b = package(m), package(d)
            if a != b and top not in (a, b):
                package_graph.setdefault(a, set()).add(b)
    return module_graph, package_graph


def test_medflow_has_no_import_cycle_between_modules_or_packages():
    module_graph, package_graph = graphs(SRC)
    assert len(module_graph) > 50, "src/medflow not found where the test looks"
    assert cycles(module_graph) == [], "module import cycle"
    assert cycles(package_graph) == [], "package import cycle"


def test_the_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "medflow"
    for folder in ("steps", "tuning"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "steps" / "train.py").write_text("from medflow.tuning.tuned import note\n")
    (pkg / "tuning" / "tuned.py").write_text("def note():\n    from medflow.steps import train\n")
    (pkg / "tuning" / "data.py").write_text("from . import tuned\n")
    module_graph, package_graph = graphs(pkg)
    assert module_graph["medflow.tuning.data"] == {"medflow.tuning.tuned"}
    assert cycles(module_graph) == [["medflow.steps.train", "medflow.tuning.tuned"]]
    assert cycles(package_graph) == [["medflow.steps", "medflow.tuning"]]


@pytest.mark.skipif(not TOOL.exists(), reason="the shared layers tool is not checked out beside this repository")
def test_the_shared_layers_tool_reports_no_cycle():
    done = subprocess.run([sys.executable, str(TOOL), str(SRC)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("0 cycle(s)"), done.stdout
