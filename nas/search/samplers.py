"""Samplers: the cascade's (``nas.search.cascade``), Optuna's TPE, NSGA-II and random, and regularized
evolution written as an Optuna sampler so it shares storage, resume and distributed workers with the others.

Constraints reach every sampler through ``Trial.set_constraint`` (stored with the trial), which Optuna 5's
TPE and NSGA-II read directly: the deprecated ``constraints_func`` is not needed.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, get_args

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.errors import InputError
from nas.search.options import SamplerName
from runners.optuna_internals import contains

SAMPLERS: tuple[str, ...] = get_args(SamplerName)  # named once, in the option's type


def violation(trial: FrozenTrial) -> float:
    return sum(max(v, 0.0) for v in trial.constraints.values())


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[optuna.study.StudyDirection]) -> bool:
    """Pareto dominance with each objective read in its own direction."""
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a, b))


class PlanningSampler(optuna.samplers.BaseSampler):
    """A sampler that plans each trial's whole genome itself (in ``before_trial`` or on its first suggestion) and
    answers each suggestion from that plan: no relative search space; a seeded ``random.Random`` for its own
    choices and Optuna's random sampler for values outside the plan."""

    def __init__(self, seed: int | None = None):
        self._rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}


class RegularizedEvolutionSampler(PlanningSampler):
    """Aging evolution (Real et al., 2019): the population is the last ``population`` finished trials; a child
    copies the winner of a random tournament of ``tournament`` members and changes one of its choices.

    Feasible trials win over infeasible ones (then the smaller violation wins); among feasible ones, fewer
    dominating members of the tournament wins, then the first objective. Until the population is full, and
    for choices the parent never made (a nested choice switched on by the mutation), it samples uniformly.
    """

    def __init__(self, population: int = 32, tournament: int = 8, seed: int | None = None):
        if population < 2 or not 1 <= tournament <= population:
            raise ValueError("need population >= 2 and 1 <= tournament <= population")
        super().__init__(seed)
        self.population, self.tournament = population, tournament
        self._plans: dict[int, tuple[dict[str, Any], str | None]] = {}

    def _parent(self, study: optuna.Study) -> FrozenTrial | None:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        members = finished[-self.population:]
        if len(members) < self.population:
            return None
        contest = self._rng.sample(members, min(self.tournament, len(members)))
        directions = study.directions

        def rank(t: FrozenTrial) -> tuple:
            bad = violation(t)
            if bad > 0:
                return (1, bad, 0, 0)
            beaten_by = sum(dominates(o.values, t.values, directions) for o in contest if violation(o) <= 0)
            sign = -1 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
            return (0, 0, beaten_by, sign * t.values[0])

        return min(contest, key=rank)

    def _plan(self, study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any], str | None]:
        if trial.number not in self._plans:
            parent = self._parent(study)
            if parent is None or not parent.params:
                self._plans[trial.number] = ({}, None)
            else:
                mutated = self._rng.choice(sorted(parent.params))
                self._plans[trial.number] = (dict(parent.params), mutated)
        return self._plans[trial.number]

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution) -> Any:
        params, mutated = self._plan(study, trial)
        if param_name in params and param_name != mutated and contains(param_distribution, params[param_name]):
            return params[param_name]
        if param_name == mutated:
            return self._mutate(param_distribution, params[param_name])
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _mutate(self, dist: BaseDistribution, value: Any) -> Any:
        """Another value of the same choice: a different option, or a neighbouring step of a range."""
        if isinstance(dist, CategoricalDistribution):
            others = [c for c in dist.choices if c != value]
            return self._rng.choice(others) if others else value
        step = getattr(dist, "step", None) or (dist.high - dist.low) / 10
        for _ in range(8):
            candidate = value + self._rng.choice([-1, 1]) * step * self._rng.randint(1, 2)
            if dist.low <= candidate <= dist.high and candidate != value:
                return type(value)(candidate)
        return value

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial.number, None)


def make_sampler(name: str, seed: int, trials: int = 100, parallel: bool = False,
                 cascade: Callable[[int], optuna.samplers.BaseSampler] | None = None) -> optuna.samplers.BaseSampler:
    """The named sampler; population sizes follow the trial count so short runs still evolve. ``parallel``:
    trials run concurrently, so TPE counts running ones as bad (constant liar) rather than sampling beside them.
    ``cascade(seed)`` makes the cascade's sampler, which needs the run's screened pool (``nas.search.cascade``)."""
    if name == "cascade":
        if cascade is None:
            raise InputError("the cascade sampler needs the run's screened genomes: nas.search builds it")
        return cascade(seed)
    if name == "tpe":
        # group=True: a nested choice is modelled only with the trials that took its parent option.
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, n_startup_trials=10,
                                          constant_liar=parallel)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 5)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "evolution":
        population = max(4, min(32, trials // 4))
        return RegularizedEvolutionSampler(population=population, tournament=max(2, population // 4), seed=seed)
    raise InputError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
