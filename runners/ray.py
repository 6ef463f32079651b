"""The Ray runner: trials as Ray Tune trials, sampled by Ray Tune's ``OptunaSearch`` on the run's own study.

The driver owns the storage: the searcher (:func:`make_searcher`) asks and prepares each trial there (so a genome
over an analytic budget, invalid, or already evaluated is settled at sampling time and never becomes a Tune trial),
Tune ships the payload to a worker, and the outcome comes back in the trial's last result. Workers touch no
storage, so a cluster needs no shared file system. With ``--objective train`` each epoch is a Tune result and
ASHA stops poor trials. A worker that dies fails its trial as interrupted and queues it once more, as the
local runner does; the study's count decides when the search is done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from runners.base import (
    Heartbeat,
    OnTrial,
    Outcome,
    StopSearch,
    Work,
    claim,
    interrupt,
    prepare,
    settle,
    void_if_surplus,
    what_next,
)
from runners.optuna_internals import storage_id, storage_of, trial_for_id
from runners.storage import open_storage

EXPERIMENT = "ray"  # the Tune experiment's folder in the run directory
# Seconds between the searcher's looks at the storage while the last trials run.
POLL_S = 0.5
# Seconds a cluster's address has to answer; Ray's own connect retries for minutes before it gives up.
CONNECT_TIMEOUT_S = 30


class RayUnreachable(ConnectionError):
    """No Ray cluster answered at the address: nothing ran."""


def unreachable(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at ``host:port`` (refused, no route, silent for ``timeout_s``), found by opening a TCP
    connection; ``None`` when one opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as err:
        return err.strerror or str(err)


def check_address(address: str | None) -> None:
    """Raise :class:`RayUnreachable` within ``CONNECT_TIMEOUT_S`` when no cluster answers at ``address``
    (``HOST:PORT`` or ``ray://HOST:PORT``). ``auto`` and a local instance are Ray's to find, and it fails fast."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayUnreachable(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    why = unreachable(host.strip("[]"), int(port))
    if why is not None:
        raise RayUnreachable(f"--address {address}: no Ray cluster answers there ({why}; a cluster must answer "
                             f"within {CONNECT_TIMEOUT_S} s); start one with `ray start --head` or fix the address")


@dataclass
class RayOptions:
    storage: str  # the study's storage URL, reopened by the driver after a restore
    study: str
    run_dir: Path
    target: int  # trials the study must count
    multi_objective: bool
    train_epochs: int | None = None  # per-epoch results and ASHA when set
    workers: int | None = None  # trials at once; None: as many as the cluster's resources hold
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    threads: int | None = None  # torch threads in a trial (default: its CPUs)
    heartbeat: float | None = None
    timeout: float | None = None
    resume: bool = False


# The driver's live objects for a searcher that Tune unpickled on restore (they cannot be pickled).
_ATTACHED: dict[str, tuple[Work, OnTrial | None]] = {}


# Ray's OptunaSearch internals the searcher below relies on: the study it samples, its Tune-trial -> Optuna-trial
# map, the define-by-run space, the sampler and mode it was given, and the hook that makes its study. Checked
# against the installed Ray by tests/test_ray_runner.py, so an upgrade that moves one fails there, loudly.
OPTUNA_SEARCH_INTERNALS = ("_ot_study", "_ot_trials", "_space", "_sampler", "_mode", "_setup_study")


def make_searcher(opts: RayOptions, sampler: optuna.samplers.BaseSampler | None):
    """The study's searcher; its class is made here so that Ray is imported only by Ray runs."""
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class _StudySearch(OptunaSearch):
        """``OptunaSearch`` on the run's study, sampling define-by-run through ``Work.prepare``."""

        def __init__(self) -> None:
            self._opts, self._key = opts, str(opts.run_dir)
            super().__init__(space=self._sample, metric="score", mode="max", sampler=sampler,
                             study_name=opts.study)
            self._idle_until = 0.0
            self._heartbeat: Heartbeat | None = None
            self._stopped = False

        # -- Ray's OptunaSearch builds an in-memory study; this one is the run's --------------------------
        def _setup_study(self, mode: Any) -> None:
            self._ot_study = optuna.load_study(storage=open_storage(self._opts.storage),
                                               study_name=self._opts.study, sampler=self._sampler)

        @property
        def work(self) -> Work:
            return _ATTACHED[self._key][0]

        def _sample(self, trial: Any) -> dict[str, Any]:
            claim(trial)
            return {"nas": prepare(self.work, self._ot_study, trial)}

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            now = time.monotonic()
            if now < self._idle_until:
                return None
            while True:
                step = what_next(self._ot_study, self._opts.target, self._opts.heartbeat)
                if step == "done" or self._stopped:
                    return Searcher.FINISHED
                if step == "wait":  # only while trials run: Tune blocks on None when none does
                    self._idle_until = now + POLL_S
                    return None
                config = super().suggest(trial_id)
                ot_trial = self._ot_trials[trial_id]
                prepared = config.pop("nas")
                if void_if_surplus(self._ot_study, ot_trial, self._opts.target):
                    prepared = None
                elif isinstance(prepared, Outcome):  # settled at sampling time: never a Tune trial
                    self._finish(ot_trial, prepared)
                if prepared is None or isinstance(prepared, Outcome):
                    del self._ot_trials[trial_id]
                    continue
                self._beat().add(storage_id(ot_trial))
                return {"payload": prepared, "trial": ot_trial.number}

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or self._opts.multi_objective or "outcome" in result:
                return
            ot_trial.report(float(result["score"]), int(result["epoch"]))

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                              error: bool = False) -> None:
            ot_trial = self._ot_trials.pop(trial_id, None)
            if ot_trial is None:
                return
            self._beat().remove(storage_id(ot_trial))
            frozen = storage_of(self._ot_study).get_trial(storage_id(ot_trial))
            if frozen.state != optuna.trial.TrialState.RUNNING:
                return  # told before the driver was killed; Tune's snapshot predates it
            if error:
                interrupt(self._ot_study, frozen, "its Ray worker died")
                return
            if result and "outcome" in result:
                outcome = Outcome(**json.loads(result["outcome"]))
            else:
                epoch, score = (result or {}).get("epoch", "?"), (result or {}).get("score", math.nan)
                outcome = Outcome(pruned=f"epoch {epoch}, val accuracy {score:.3f} (ASHA)")
            self._finish(ot_trial, outcome)

        def _finish(self, ot_trial: optuna.Trial, outcome: Outcome) -> None:
            frozen = settle(self._ot_study, ot_trial, outcome)
            on_trial = _ATTACHED[self._key][1]
            if on_trial is not None:
                try:
                    on_trial(frozen, self._ot_study.get_trials(deepcopy=False))
                except StopSearch:
                    self._stopped = True  # no more suggestions; Tune ends once the running trials end

        def _beat(self) -> Heartbeat:
            if self._heartbeat is None:
                self._heartbeat = Heartbeat(storage_of(self._ot_study), self._opts.heartbeat)
            return self._heartbeat

        # -- Tune pickles the searcher (tuner.pkl, its checkpoints): keep the trial map, reopen the study -------
        def __getstate__(self) -> dict[str, Any]:
            state = self.__dict__.copy()
            state["_ot_trials"] = {tid: t.number for tid, t in self._ot_trials.items()}
            for key in ("_ot_study", "_space", "_heartbeat"):
                state[key] = None
            return state

        def __setstate__(self, state: dict[str, Any]) -> None:
            numbers = state.pop("_ot_trials")
            self.__dict__.update(state)
            self._space = self._sample
            self._setup_study(self._mode)
            running = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)
                       if t.state == optuna.trial.TrialState.RUNNING}
            # Trials the snapshot saw running: Tune re-runs the unfinished ones, and this driver owns them now
            self._ot_trials = {tid: trial_for_id(self._ot_study, storage_id(running[n]))
                               for tid, n in numbers.items() if n in running}
            for trial in self._ot_trials.values():
                claim(trial)
                self._beat().add(storage_id(trial))

        def save(self, checkpoint_path: str) -> None:
            import pickle

            with open(checkpoint_path, "wb") as f:
                pickle.dump(self.__getstate__(), f)

        def restore(self, checkpoint_path: str) -> None:
            import pickle

            with open(checkpoint_path, "rb") as f:
                self.__setstate__(pickle.load(f))

    return _StudySearch()


def _trainable(config: dict[str, Any], work: Work, epochs: int | None, threads: int) -> None:
    """One Tune trial: evaluate the payload; epochs before the last are results ASHA can stop at."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)

    reported = False

    def report(epoch: int, accuracy: float) -> None:
        nonlocal reported
        if epochs is not None and epoch < epochs:
            reported = True
            tune.report({"score": accuracy, "epoch": epoch})

    outcome = work.evaluate(config["payload"], report=report if epochs else None)
    score = outcome.values[0] if outcome.values else math.nan
    # One string, so that Tune does not flatten it into its result columns
    final = {"score": score, "outcome": json.dumps(dataclasses.asdict(outcome))}
    if reported or not epochs:
        # ASHA ranks trainings epoch by epoch: a trial that reported no epoch (a score of another kind, a
        # training that ran past the pruner) has no ``epoch``, and ASHA leaves it out of its rungs.
        final["epoch"] = epochs or 1
    tune.report(final)


def _init(ray: Any, address: str | None) -> None:
    if not address:  # "local": a new instance even when a cluster runs on this machine (that one is --address auto)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        return
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except ConnectionError as err:
        raise RayUnreachable(f"--address {address}: {str(err).strip().splitlines()[0]}") from None


def run_ray(opts: RayOptions, work: Work, sampler: optuna.samplers.BaseSampler | None = None,
            on_trial: OnTrial | None = None) -> None:
    """Run the study's remaining trials on Ray: a cluster at ``opts.address``, else a local instance that
    starts and stops here. ``opts.resume`` restores the run's Tune experiment (Tune's own restore)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the study is the record
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune snapshots its state every 10 s or more by default; a restore re-runs what finished after the last one
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    import ray
    from ray import tune

    started = not ray.is_initialized()
    if started:
        _init(ray, opts.address)
    _ATTACHED[str(opts.run_dir)] = (work, on_trial)
    try:
        threads = opts.threads or max(1, int(opts.cpus_per_trial))
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, work=work, epochs=opts.train_epochs, threads=threads),
            {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
        path = opts.run_dir / EXPERIMENT
        if opts.resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            scheduler = None
            if opts.train_epochs:
                scheduler = tune.schedulers.ASHAScheduler(time_attr="epoch", max_t=opts.train_epochs,
                                                          grace_period=1, reduction_factor=2)
            searcher = make_searcher(opts, sampler)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric="score", mode="max",
                                            num_samples=-1, max_concurrent_trials=opts.workers,
                                            time_budget_s=opts.timeout, reuse_actors=True,
                                            trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(opts.run_dir), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    finally:
        _ATTACHED.pop(str(opts.run_dir), None)
        if started:
            ray.shutdown()
