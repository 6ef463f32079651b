"""The search: ``nas.search(space, budget=...)`` and ``nas search``; the loop is in ``nas.search.run``.

``nas.search`` is both this package and the function: the package is callable (its class forwards calls to
``nas.search.run.search``), so ``nas.search(...)`` and ``import nas.search.report`` both work.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any

from nas.search.options import SearchOptions

# Loaded on first use: building the command line's parser needs SearchOptions alone, and the rest imports
# Optuna (seconds), which commands that do not search never pay for.
_LAZY = {"search": "nas.search.run", "InfeasibleBudget": "nas.search.survey", "ParetoPoint": "nas.search.report",
         "RegularizedEvolutionSampler": "nas.search.samplers", "SearchResult": "nas.search.report",
         "write_report": "nas.search.report"}
__all__ = ["InfeasibleBudget", "ParetoPoint", "RegularizedEvolutionSampler", "SearchOptions", "SearchResult",
           "search", "write_report"]


def __getattr__(name: str) -> Any:
    """An export, or a submodule (``nas.search.run`` after ``import nas``), imported when first asked for."""
    if name in _LAZY:
        value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":  # the module exists and lacks a dependency: say that
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Any:
        return self.search(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.search)


sys.modules[__name__].__class__ = _CallablePackage
