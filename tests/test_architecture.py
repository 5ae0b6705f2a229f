"""The layering of docs/architecture.md, checked on the source: arrows point down only, siblings
of a layer do not import each other, and no two modules import each other (directly or round a
longer circle). Imports inside functions and under ``TYPE_CHECKING`` count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurotorch"

# Lowest first. Packages of one layer are siblings: neither imports the other.
LAYERS: list[set[str]] = [
    {"errors", "_lazy", "_docs"},
    {"config", "log", "_options"},
    {"io", "parallel"},
    {"fmri", "meeg", "connectome"},
    {"synthetic", "plotting", "describe", "verify", "features"},
    {"data"},
    {"models"},
    {"lightning"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def top_part(module: str) -> str:
    """``neurotorch.fmri.subject`` → ``fmri``; the package's own ``__init__`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """The neurotorch modules (or packages) ``path`` imports, resolved to existing modules."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("neurotorch")
        ):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined by the module itself
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("neurotorch"))
    return {name for name in found if name in MODULES}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_every_top_level_part_has_a_layer():
    parts = {top_part(name) for name in MODULES}
    assert parts <= set(LAYER_OF), f"add {sorted(parts - set(LAYER_OF))} to LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_only(module: str):
    source = top_part(module)
    wrong = []
    for target in sorted(GRAPH[module]):
        other = top_part(target)
        if other == source or target == "neurotorch":
            continue
        if LAYER_OF[other] > LAYER_OF[source]:
            wrong.append(f"{target} (layer {other!r} sits above {source!r})")
        elif LAYER_OF[other] == LAYER_OF[source]:
            wrong.append(f"{target} ({other!r} is a sibling of {source!r})")
    assert not wrong, f"{module} imports " + "; ".join(wrong)


def test_no_import_circles():
    """Tarjan's strongly connected components of the module graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"
