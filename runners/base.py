"""What every runner shares: the work a search hands over, the outcome a trial comes back with, how a finished
trial is written to the Optuna storage, and which stored trials count.

Runners know the search only through :class:`Work`: ``prepare`` samples a trial where the storage is (it may
settle the trial there, e.g. over budget), ``evaluate`` runs anywhere (another process, a Ray worker) and
touches no storage. So a runner moves a picklable payload to where the compute is and an :class:`Outcome`
back, and nothing else.
"""
from __future__ import annotations

import datetime
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.optuna_internals import storage_id, storage_of

WORKER = f"{socket.gethostname()}:{os.getpid()}"
INTERRUPTED = "interrupted"
SURPLUS = "surplus"
# User attribute of a trial settled as a copy of an earlier trial's genome (its result reused, nothing run).
DUPLICATE_OF = "duplicate_of"
# User attribute (True) of a cheap evaluation that chooses what the counted trials evaluate (a cascade's zero-cost
# stage ahead of its trainings), set when the trial is asked: its value is not the objective's, and it does not
# use up a trial of the count.
SCREENING = "screening"
# User attributes a sampler may set on a trial when it is asked, saying what kind of trial it is to be (a cascade's
# stage, the epochs it trains, whether it screens): a retry of an interrupted trial keeps them, so that it runs
# as the same kind of trial, not as whatever the search runs by default.
PLAN = ("stage", "epochs", SCREENING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A trial whose heartbeat is this many intervals old belongs to a dead worker.
GRACE_BEATS = 4
# Seconds a trial may run unclaimed: ``ask`` creates it RUNNING and samples it (TPE may take a while) before the
# asking worker can stamp it as its own; only after this long is an unclaimed trial taken for a dead worker's.
UNCLAIMED_GRACE_S = 120

# ``report(step, value)``: a trial's progress (an epoch's accuracy); a runner may stop the trial from inside it.
Report = Callable[[int, float], None]
# ``on_trial(trial, all_trials)``: the driver sees each trial it finished, with the study's trials (it may raise
# to stop the search).
OnTrial = Callable[[FrozenTrial, list[FrozenTrial]], None]


@dataclass
class Outcome:
    """A trial's result: its objective values, or why it has none. Picklable."""

    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # stored as user attributes
    constraints: dict[str, float] = field(default_factory=dict)  # <= 0 feasible, as Optuna reads them
    failure: str | None = None
    pruned: str | None = None

    @property
    def state(self) -> TrialState:
        if self.failure is not None:
            return TrialState.FAIL
        if self.pruned is not None:
            return TrialState.PRUNED
        return TrialState.COMPLETE


class StopSearch(Exception):
    """Raised by ``on_trial`` to end the search cleanly: the runner starts no more trials and returns."""


class Work(Protocol):
    """The search's side of a trial."""

    def prepare(self, study: optuna.Study, trial: optuna.Trial) -> dict[str, Any] | Outcome:
        """Sample the trial; the payload to evaluate, or the outcome when no evaluation is needed."""

    def evaluate(self, payload: dict[str, Any], report: Report | None = None) -> Outcome:
        """Build and score; runs wherever the runner puts it and never raises for a trial's own failure."""


def prepare(work: Work, study: optuna.Study, trial: optuna.Trial) -> dict[str, Any] | Outcome:
    """``work.prepare``, with a bug in preparing one trial failing that trial rather than the search."""
    try:
        return work.prepare(study, trial)
    except Exception as err:  # noqa: BLE001
        return Outcome(failure=f"{type(err).__name__}: {err}")


def settle(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> FrozenTrial:
    """Write the outcome to the storage and finish the trial."""
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    for key, value in outcome.constraints.items():
        trial.set_constraint(key, value)
    if outcome.failure is not None:
        trial.set_user_attr("failure", outcome.failure)
    if outcome.pruned is not None:
        trial.set_user_attr("pruned_at", outcome.pruned)
    values = outcome.values if outcome.state == TrialState.COMPLETE else None
    return study.tell(trial, values=values, state=outcome.state)


def is_void(trial: FrozenTrial) -> bool:
    """Failed for a reason outside the genome (its process died, or other workers had reached the count): it
    does not count, and another trial takes its place."""
    failure = str(trial.user_attrs.get("failure", ""))
    return trial.state == TrialState.FAIL and failure.startswith((INTERRUPTED, SURPLUS))


def is_duplicate(trial: FrozenTrial) -> bool:
    """A genome evaluated before: its stored result was reused, so it does not use up a trial of the count."""
    return DUPLICATE_OF in trial.user_attrs


def is_screening(trial: FrozenTrial) -> bool:
    """A screening evaluation (``SCREENING``): not a result of the objective, and not counted."""
    return bool(trial.user_attrs.get(SCREENING))


def counts(trial: FrozenTrial) -> bool:
    """Whether the trial uses up one of the requested number once finished: not void, not a duplicate, not a
    screening evaluation."""
    return not is_void(trial) and not is_duplicate(trial) and not is_screening(trial)


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that count toward the requested number: finished and ``counts``."""
    return sum(t.state in FINISHED and counts(t) for t in trials)


def in_flight(trials: list[FrozenTrial]) -> int:
    return sum(t.state == TrialState.RUNNING and not is_screening(t) for t in trials)


def claim(trial: optuna.Trial) -> None:
    """Mark the trial as this process's, so that recovery can tell a live worker's trial from a dead one's."""
    trial.set_user_attr("worker", WORKER)
    trial.set_user_attr("heartbeat", time.time())


def what_next(study: optuna.Study, target: int, heartbeat_s: float | None) -> str:
    """``"done"`` when the study counts ``target`` trials (with every worker's), ``"wait"`` while the last ones
    run (one may yet fail and need replacing: dead workers' trials are recovered here), else ``"ask"``."""
    trials = study.get_trials(deepcopy=False)
    done, running = counted(trials), in_flight(trials)
    if done >= target:
        return "done"
    if done + running >= target:
        recover(study, heartbeat_s * GRACE_BEATS if heartbeat_s else None)
        return "wait"
    return "ask"


def is_surplus(study: optuna.Study, number: int, target: int) -> bool:
    """True when ``target`` live trials precede trial ``number``. Storages number trials atomically, so this
    check after ``ask`` honours the count across workers with no lock: exactly the first live ones run. A
    running trial counts here even if it turns out a duplicate; then one more is asked (as for a void one)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(counts(t) for t in earlier) >= target


def void_if_surplus(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    if not is_surplus(study, trial.number, target):
        return False
    void(study, trial, f"{SURPLUS} (other workers reached the {target} trials first)")
    return True


def void(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    return settle(study, trial, Outcome(failure=reason))


# ---------------------------------------------------------------------------------------------------------------
# Dead workers: a RUNNING trial whose process is gone is failed as interrupted and tried once more.

def recover(study: optuna.Study, grace_s: float | None = None) -> int:
    """Fail the RUNNING trials of dead workers and queue each for one retry; returns how many.

    Two signs of death: on this host, the trial's process no longer exists (seen at once); on any host, its
    heartbeat (see :class:`Heartbeat`) is older than ``grace_s``.
    """
    host = WORKER.rpartition(":")[0]
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = worker.rpartition(":")
        beat = trial.user_attrs.get("heartbeat")
        if not worker:
            if _age_s(trial) < UNCLAIMED_GRACE_S:
                continue  # just asked: its worker has not claimed it yet
            why = f"no worker claimed it in {UNCLAIMED_GRACE_S} s"
        elif worker_host == host and pid.isdigit() and not _alive(int(pid)):
            why = f"its process {worker} died"
        elif grace_s and isinstance(beat, (int, float)) and time.time() - beat > grace_s:
            why = f"no heartbeat from {worker} for {time.time() - beat:.0f}s"
        else:
            continue
        recovered += interrupt(study, trial, why)
    return recovered


def _age_s(trial: FrozenTrial) -> float:
    started = trial.datetime_start
    return (datetime.datetime.now() - started).total_seconds() if started else float("inf")


def interrupt(study: optuna.Study, trial: FrozenTrial, why: str) -> bool:
    """Fail a trial whose worker died, and queue its genome once more; False if it had finished meanwhile."""
    try:
        storage_of(study).set_trial_user_attr(storage_id(trial), "failure", f"{INTERRUPTED} ({why})")
        storage_of(study).set_trial_state_values(storage_id(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished, or another worker recovered it first
    retry(study, trial)
    return True


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the same parameters (and ``PLAN``) once more, unless this already was the retry (a genome that kills
    its worker, by running out of memory say, must not loop)."""
    if "retry_of" in trial.user_attrs or not trial.params:
        return
    plan = {key: trial.user_attrs[key] for key in PLAN if key in trial.user_attrs}
    study.enqueue_trial(trial.params, user_attrs={**plan, "retry_of": trial.number}, skip_if_exists=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Stamps this process's running trials with the time every ``interval_s``, in the storage itself (any
    storage, any host), so that other workers can tell a live trial from one whose machine went away."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: float | None):
        self.storage, self.interval_s = storage, interval_s
        self._trials: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if not self.interval_s:
            return
        with self._lock:
            self._trials.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="nas-heartbeat", daemon=True)
            self._thread.start()

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._trials.discard(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                ids = list(self._trials)
            for id_ in ids:
                try:
                    self.storage.set_trial_user_attr(id_, "heartbeat", time.time())
                except Exception:  # noqa: BLE001 - finished meanwhile, or a missed beat retried next interval
                    pass

    def close(self) -> None:
        self._stop.set()
