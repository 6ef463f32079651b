"""nas: neural architecture search and composition for hybrid vision backbones."""
from __future__ import annotations

from nas.compiler import compile_model
from nas.cost import Cost, analytic_cost
from nas.errors import GenomeError, InputError, NasError
from nas.export import export_model, standalone_source
from nas.genome import Genome
from nas.graph import build_graph
from nas.io import dump_genome, load_genome

__version__ = "0.1.0"
__all__ = ["Cost", "Genome", "GenomeError", "InputError", "NasError", "SearchResult", "analytic_cost", "build_graph",
           "compile_model", "dump_genome", "export_model", "load_genome", "search", "standalone_source"]


def __getattr__(name: str):
    """``nas.search`` (a callable package: ``nas.search(space, budget=...)``) and ``nas.SearchResult`` load on
    first use, so commands that do not search never import Optuna."""
    if name in ("search", "SearchResult"):
        import importlib

        package = importlib.import_module("nas.search")
        return package if name == "search" else package.SearchResult
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
