"""The package graph points one way and has no cycles (docs/architecture.md, "Packages and layers").

Read from the source with grimp (every ``import`` statement, those inside functions included; imports under
``if TYPE_CHECKING:`` do not run and are left out), so a new import that breaks a layer or closes a cycle fails here
with the importing module and line.
"""
from __future__ import annotations

import grimp
import pytest

#: Our packages, bottom first.
PACKAGES = ("settings", "models", "dicom_io", "training", "worker", "mccad")
#: What each package must never import.
FORBIDDEN = {
    "settings": {"models", "dicom_io", "training", "worker", "mccad"},
    "models": {"dicom_io", "training", "worker", "mccad"},
    "dicom_io": {"training", "worker", "mccad"},
    "training": {"worker", "mccad"},
    "worker": {"training", "mccad"},
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def _lines(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    return ", ".join(str(d["line_number"]) for d in details)


def test_each_layer_imports_only_the_layers_below_it(graph):
    broken = []
    for importer in sorted(graph.modules):
        forbidden = FORBIDDEN.get(importer.split(".")[0], set())
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.split(".")[0] in forbidden:
                broken.append(f"{importer} imports {imported} (line {_lines(graph, importer, imported)})")
    assert not broken, "imports against the layers:\n" + "\n".join(broken)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles(graph):
    described = []
    for cycle in import_cycles(graph):
        edges = [f"  {a} -> {b} (line {_lines(graph, a, b)})" for a in cycle
                 for b in sorted(graph.find_modules_directly_imported_by(a)) if b in cycle]
        described.append(" <-> ".join(cycle) + "\n" + "\n".join(edges))
    assert not described, "import cycles:\n" + "\n".join(described)


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
