"""The Optuna internals ``nas`` relies on, in one place: what the public API does not offer. Each is a one-line
reach into a private attribute, checked against the installed Optuna by ``tests/test_runners.py`` so that an
upgrade that moves one fails there, loudly, rather than in a search.

- A trial's storage id: the heartbeat and dead-worker recovery write to a trial by id, from threads and from
  processes that did not ``ask`` it.
- A study's storage: recovery fails another process's RUNNING trial, which ``Study.tell`` refuses.
- An enqueued trial's mark: a sampler leaves the genome of a trial enqueued with its params alone.
- A distribution's membership test: the evolution sampler keeps a parent's value only where the child's
  distribution still holds it.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution

# (object, attribute) pairs this module reads; the test checks each exists on real objects.
USED = (("Study", "_storage"), ("Trial", "_trial_id"), ("FrozenTrial", "_trial_id"),
        ("BaseDistribution", "_contains"))


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def storage_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The trial's id in its storage (not its number in the study)."""
    return trial._trial_id


def trial_for_id(study: optuna.Study, trial_id_: int) -> optuna.Trial:
    """A live handle on a RUNNING trial of the study (Ray restores its trials this way after a restart)."""
    return optuna.Trial(study, trial_id_)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one of ``dist``'s values."""
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError, IndexError):
        return False


def is_enqueued(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial was enqueued with fixed params (``Study.enqueue_trial``), which its sampler must keep."""
    return "fixed_params" in trial.system_attrs


def stored_user_attrs(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """The user attributes stored for a live trial now: those its sampler wrote in ``before_trial``, which the
    trial's own view (fetched before the sampler ran) does not show."""
    return storage_of(study).get_trial_user_attrs(storage_id(trial))
