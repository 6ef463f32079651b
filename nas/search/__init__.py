"""The search: ``nas.search(space, budget=...)`` and ``nas search``; the loop is in ``nas.search.run``.

``nas.search`` is both this package and the function: the package is callable (its class forwards calls to
``nas.search.run.search``), so ``nas.search(...)`` and ``import nas.search.report`` both work.
"""
from __future__ import annotations

import inspect
import sys
import types

from nas.search.options import SearchOptions
from nas.search.report import ParetoPoint, SearchResult, write_report
from nas.search.run import search
from nas.search.samplers import RegularizedEvolutionSampler
from nas.search.survey import InfeasibleBudget

__all__ = ["InfeasibleBudget", "ParetoPoint", "RegularizedEvolutionSampler", "SearchOptions", "SearchResult",
           "search", "write_report"]
__signature__ = inspect.signature(search)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
