"""One-way imports: ``blocks`` knows nothing of search (nor of ``nas``), ``runners`` nothing of ``nas``, and no
package imports in a circle, counting imports inside functions too (a deferred import is still a dependency)."""
from __future__ import annotations

import ast

import networkx as nx

from tests.conftest import ROOT

PACKAGES = ("nas", "blocks", "runners")


def _module_name(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> nx.DiGraph:
    """Module -> modules of ours it imports (``from nas.cost import x`` counts as ``nas.cost``)."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for target in targets:
                while target and target not in files:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_runners_and_blocks_import_nothing_of_nas():
    graph = import_graph()
    leaks = [(a, b) for a, b in graph.edges if a.split(".")[0] in ("runners", "blocks") and b.startswith("nas")]
    assert not leaks, leaks


def test_no_import_circles():
    # A package's __init__ importing its own modules is how packages work, not a circle: leave those edges out.
    graph = import_graph()
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(graph, length_bound=6))
    assert not cycles, cycles[:5]
