"""The local runner: trials in this process, against a storage other processes may share.

Every process running :func:`run_trials` on the same study is a worker of one search: the count is the
study's, a trial number beyond it is voided as surplus, and trials of dead workers are failed and retried
(``runners.base.recover``). ``nas search --workers N`` starts N-1 such processes beside itself
(:func:`start_workers`); a person can start more by hand on any machine that reaches the storage.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from runners.base import (
    Heartbeat,
    OnTrial,
    Outcome,
    StopSearch,
    Work,
    claim,
    prepare,
    recover,
    settle,
    void,
    void_if_surplus,
    what_next,
)
from runners.optuna_internals import storage_id, storage_of

# Seconds between looks at the storage while other workers' trials finish the count.
POLL_S = 1.0


def run_trial(study: optuna.Study, work: Work, *, target: int, prune: bool = False,
              heartbeat: Heartbeat | None = None) -> FrozenTrial | None:
    """Ask, prepare, evaluate and tell one trial here; ``None`` when other workers had reached ``target``."""
    trial = study.ask()
    claim(trial)
    if void_if_surplus(study, trial, target):
        return None
    if heartbeat is not None:
        heartbeat.add(storage_id(trial))
    try:
        prepared = prepare(work, study, trial)
        outcome = prepared if isinstance(prepared, Outcome) else work.evaluate(
            prepared, report=_pruning(trial) if prune else None)
    except KeyboardInterrupt:
        void(study, trial, "interrupted (Ctrl-C)")
        raise
    finally:
        if heartbeat is not None:
            heartbeat.remove(storage_id(trial))
    return settle(study, trial, outcome)


def _pruning(trial: optuna.Trial) -> Callable[[int, float], None]:
    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {step}, val accuracy {value:.3f}")

    return report


def run_trials(study: optuna.Study, work: Work, target: int, *, prune: bool = False,
               heartbeat_s: float | None = None, timeout: float | None = None, on_trial: OnTrial | None = None) -> str:
    """Run trials until the study counts ``target`` (with any other workers); returns why it stopped:
    ``"done"``, ``"timeout"`` or ``"stopped"`` (``on_trial`` raised ``StopSearch``). While the last trials run
    elsewhere, it waits for them: one may yet fail and need replacing."""
    heartbeat = Heartbeat(storage_of(study), heartbeat_s)
    start = time.perf_counter()
    recover(study)
    try:
        while True:
            if timeout is not None and time.perf_counter() - start >= timeout:
                return "timeout"
            step = what_next(study, target, heartbeat_s)
            if step == "done":
                return "done"
            if step == "wait":
                time.sleep(POLL_S)
                continue
            trial = run_trial(study, work, target=target, prune=prune, heartbeat=heartbeat)
            if trial is not None and on_trial is not None:
                try:
                    on_trial(trial, study.get_trials(deepcopy=False))
                except StopSearch:
                    return "stopped"
    finally:
        heartbeat.close()


def start_workers(count: int, command: Sequence[str], log_dir: Path) -> list[subprocess.Popen]:
    """``count`` worker processes running ``command`` (a ``nas search`` that joins the run), each logging to
    ``log_dir/worker-K.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(1, count + 1):
        log = (log_dir / f"worker-{k}.log").open("ab")
        procs.append(subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()
    return procs


def wait_workers(procs: list[subprocess.Popen], stop: bool = False) -> list[int]:
    """Wait for the workers (their trials are part of the count); ``stop`` asks them to end first (SIGTERM:
    each voids its running trial and exits)."""
    for proc in procs:
        if stop and proc.poll() is None:
            proc.terminate()
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=60 if stop else None))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes
