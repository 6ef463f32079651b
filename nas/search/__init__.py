"""The search: ``nas.search(space, budget=...)`` and ``nas search``. See ``nas.search.run``."""
from __future__ import annotations

from nas.search.options import SearchOptions
from nas.search.report import ParetoPoint, SearchResult, write_report
from nas.search.run import search
from nas.search.samplers import RegularizedEvolutionSampler
from nas.search.survey import InfeasibleBudget

__all__ = ["InfeasibleBudget", "ParetoPoint", "RegularizedEvolutionSampler", "SearchOptions", "SearchResult",
           "search", "write_report"]
