"""A space's choices as Optuna parameters, suggested define-by-run.

A parameter is named by its choice's YAML path (``stages[2].block.mixer``, ``stages[2].depth``), so Optuna's
importance tables read like the space file. A choice nested in an option (a mixer's kernel) is suggested only
when that option is taken, so conditional samplers (TPE with ``group=True``) see the true tree.
Categorical options are shown by label: the scalar itself, or for a mapping its ``type`` (made unique with
the fields that tell equal types apart).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import optuna

from nas.space import Choice, choices, instantiate, parse_choice, random_picker


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _describe(option: Any) -> str:
    if isinstance(option, dict):
        kind = parse_choice(option, "")
        if kind is not None:
            return f"{kind.kind} choice"
        fields = [f"{k}={v}" for k, v in option.items() if k != "type" and _scalar(v)]
        nested = [k for k, v in option.items() if isinstance(v, dict)]
        return " ".join([str(option.get("type", "mapping")), *fields, *(f"{k}=?" for k in nested)])
    return repr(option)


def option_labels(choice: Choice) -> list[Any]:
    """Labels Optuna stores for a categorical choice; scalars stand for themselves."""
    if all(_scalar(o) for o in choice.options):
        return list(choice.options)
    labels = [str(o.get("type", i)) if isinstance(o, dict) else str(o) for i, o in enumerate(choice.options)]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels = [_describe(o) if lab == label else lab for o, lab in zip(choice.options, labels)]
    return [label if labels.count(label) == 1 else f"{label} #{i}" for i, label in enumerate(labels)]


def distribution(choice: Choice) -> optuna.distributions.BaseDistribution:
    if choice.kind == "choice":
        return optuna.distributions.CategoricalDistribution(option_labels(choice))
    if choice.kind == "int":
        return optuna.distributions.IntDistribution(int(choice.low), int(choice.high), log=choice.log,
                                                    step=int(choice.step or 1))
    return optuna.distributions.FloatDistribution(choice.low, choice.high, log=choice.log, step=choice.step)


def _option(choice: Choice, label: Any) -> Any:
    return choice.options[option_labels(choice).index(label)]


def trial_picker(trial: optuna.trial.BaseTrial) -> Callable[[Choice], Any]:
    """Picks through ``trial.suggest_*``: what the sampler chose, named by the YAML path."""

    def pick(choice: Choice) -> Any:
        if choice.kind == "choice":
            return _option(choice, trial.suggest_categorical(choice.path, option_labels(choice)))
        if choice.kind == "int":
            return trial.suggest_int(choice.path, int(choice.low), int(choice.high), step=int(choice.step or 1),
                                     log=choice.log)
        return trial.suggest_float(choice.path, choice.low, choice.high, step=choice.step, log=choice.log)

    return pick


def params_picker(params: dict[str, Any]) -> Callable[[Choice], Any]:
    """Picks a stored trial's params again: rebuilds the genome of a finished trial."""

    def pick(choice: Choice) -> Any:
        value = params[choice.path]
        return _option(choice, value) if choice.kind == "choice" else value

    return pick


def genome_data(space: dict[str, Any], pick: Callable[[Choice], Any]) -> dict[str, Any]:
    return instantiate(space, pick)


def random_params(space: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """(genome mapping, Optuna params) of one uniform draw: what ``enqueue_trial`` needs to replay it."""
    params: dict[str, Any] = {}
    inner = random_picker(rng)

    def pick(choice: Choice) -> Any:
        value = inner(choice)
        if choice.kind == "choice":
            index = next(i for i, o in enumerate(choice.options) if o is value or o == value)
            params[choice.path] = option_labels(choice)[index]
        else:
            params[choice.path] = value
        return value

    return instantiate(space, pick), params


def space_choices(space: dict[str, Any]) -> list[Choice]:
    return choices(space)
