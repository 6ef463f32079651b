"""Before the loop: what the space can reach under the budget, from analytic costs only (no model built).

A greedy per-choice minimum (coordinate descent over the choices, ranges at their low end) plus uniform
samples finds the smallest achievable cost; if even that is over budget the search stops at once with it.
The samples also give the feasible share (for the time estimate) and a median-cost feasible genome (to
calibrate the time per trial on).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from nas.cost import Cost, analytic_cost
from nas.cost.budget import format_count
from nas.errors import GenomeError, InputError
from nas.io import parse_genome
from nas.search.options import SearchOptions
from nas.search.params import random_params
from nas.search.trial import constraint_values
from nas.space import Choice, choices, instantiate


class InfeasibleBudget(InputError):
    """No genome of the space fits the budget."""


@dataclass
class Survey:
    sampled: int
    valid: int
    feasible: int
    smallest: Cost | None  # by total relative excess over the budgets
    median_params: dict[str, Any] | None  # Optuna params of a median-FLOPs feasible sample
    largest_flops: int | None = None  # the most FLOPs of a feasible sample: the cost the run's genomes reach
    median_flops: int | None = None  # of the feasible samples: what a typical trial costs
    largest: dict[str, Any] | None = None  # that sample's genome: what a trial's training memory reaches

    @property
    def feasible_share(self) -> float:
        return self.feasible / max(self.sampled, 1)


def _cost(data: dict[str, Any]) -> Cost | None:
    try:
        return analytic_cost(parse_genome(data))
    except GenomeError:
        return None


def _excess(options: SearchOptions, cost: Cost) -> float:
    return sum(max(v, 0.0) for v in constraint_values(options, cost, None).values())


def greedy_minimum(space: dict[str, Any], passes: int = 2) -> Cost | None:
    """Coordinate descent: each categorical choice in turn takes the option with the fewest FLOPs (then
    params) given the others; ranges sit at their low end, which is never costlier in these spaces."""
    found = [c for c in choices(space) if c.kind == "choice"]
    current: dict[str, int] = {}

    def pick(choice: Choice) -> Any:
        if choice.kind == "choice":
            return choice.options[current.get(choice.path, 0)]
        return int(choice.low) if choice.kind == "int" else choice.low

    best = _cost(instantiate(space, pick))
    for _ in range(passes):
        for choice in found:
            for index in range(len(choice.options)):
                previous = current.get(choice.path, 0)
                current[choice.path] = index
                cost = _cost(instantiate(space, pick))
                if cost is not None and (best is None or (cost.flops, cost.params) < (best.flops, best.params)):
                    best = cost
                else:
                    current[choice.path] = previous
    return best


def survey(space: dict[str, Any], options: SearchOptions, samples: int = 500) -> Survey:
    rng = random.Random(options.seed)
    valid = feasible = 0
    smallest: Cost | None = None
    fitting: list[tuple[int, dict[str, Any]]] = []
    for _ in range(samples):
        data, params = random_params(space, rng)
        cost = _cost(data)
        if cost is None:
            continue
        valid += 1
        if smallest is None or _excess(options, cost) < _excess(options, smallest) or (
                _excess(options, cost) == _excess(options, smallest) and cost.flops < smallest.flops):
            smallest = cost
        if _excess(options, cost) <= 0:
            feasible += 1
            fitting.append((cost.flops, params, data))
    greedy = greedy_minimum(space)
    if greedy is not None and (smallest is None or _excess(options, greedy) < _excess(options, smallest)):
        smallest = greedy
    median = largest = median_flops = largest_data = None
    if fitting:
        fitting.sort(key=lambda item: item[0])
        median_flops, median, _ = fitting[len(fitting) // 2]
        largest, _, largest_data = fitting[-1]
    return Survey(samples, valid, feasible, smallest, median, largest, median_flops, largest_data)


def check_reachable(survey_: Survey, options: SearchOptions, label: str) -> None:
    """Stop before the loop when nothing is valid, or nothing found fits the budget."""
    if survey_.valid == 0 or survey_.smallest is None:
        raise InputError(f"{label}: none of {survey_.sampled} random samples is a valid genome; "
                         f"run `nas validate {label}` to see why")
    if _excess(options, survey_.smallest) > 0:
        budgets = ", ".join(b for b in (
            f"FLOPs <= {options.budget}" if options.budget else "",
            f"params <= {options.params}" if options.params else "") if b)
        small = survey_.smallest
        raise InfeasibleBudget(
            f"no genome of {label} fits the budget ({budgets}): the smallest found costs "
            f"{format_count(small.flops)}FLOPs and {format_count(small.params)} params "
            f"(greedy per-choice minimum and {survey_.sampled} random samples); raise the budget or "
            f"shrink the space")
