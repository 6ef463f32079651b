"""Shared-storage workers on a real PostgreSQL server, the storage the README gives clusters: real ``nas``
processes, killed mid-trial, recovered by another worker or by ``--resume``. The ``postgres_url`` fixture
(tests/conftest.py) starts the server; each test gets an empty database of its own.

To kill a worker mid-trial without a race, it is first frozen (SIGSTOP) once it holds a trial RUNNING in the
storage past sampling, and killed only if that trial is still RUNNING then.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from runners.base import FINISHED, counted, is_void
from runners.storage import open_storage
from tests.conftest import ROOT

T = TypeVar("T")
# Fast trials: the tiny space, two timed runs per latency
FAST = ("--space", "tiny", "--latency-repeats", "2")


@pytest.fixture
def database(postgres_url: str) -> str:
    """The URL of a new, empty database on the test server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{postgres_url.rpartition('/')[0]}/{name}"


@pytest.fixture
def start_nas() -> Iterator[Callable[..., subprocess.Popen]]:
    """``start_nas(*ARGS, cwd=DIR)``: ``nas ARGS`` in a real process, as if on a machine of its own (its own
    device locks, so a frozen worker does not hold up the others' latency measurements), logging to
    ``DIR/nas-*.log``. Whatever still runs when the test ends is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: object, cwd: Path) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's nas
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, "NAS_LOCK_DIR": str(cwd / "locks")}
        with (cwd / f"nas-{uuid.uuid4().hex[:6]}.log").open("w") as log:
            started.append(subprocess.Popen([sys.executable, "-m", "nas", *map(str, args)], cwd=cwd, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def logs(cwd: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(cwd.glob("nas-*.log")))


def trials_of(storage: optuna.storages.BaseStorage, study: str) -> list[FrozenTrial]:
    """The study's trials; none before it exists."""
    try:
        return optuna.load_study(storage=storage, study_name=study).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_for(what: str, condition: Callable[[], T], timeout: float = 240) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")


def pid_of(trial: FrozenTrial) -> int:
    """The process of a trial's worker (user attribute ``worker``, ``host:pid``)."""
    pid = str(trial.user_attrs.get("worker", "")).rpartition(":")[2]
    return int(pid) if pid.isdigit() else -1


def freeze_mid_trial(proc: subprocess.Popen, storage: optuna.storages.BaseStorage, study: str,
                     after: int) -> FrozenTrial:
    """Stop ``proc`` (SIGSTOP) while a trial of its own, sampled and costed (it has its ``flops``, stored once
    all its params are; the cascade sampler claims a genome's hash before that), is RUNNING in the storage, once
    it has finished ``after`` others; returns that trial."""
    def evaluating() -> FrozenTrial | None:
        mine = [t for t in trials_of(storage, study) if pid_of(t) == proc.pid]
        assert proc.poll() is None, f"the worker exited ({proc.returncode}) before it was stopped"
        running = [t for t in mine if t.state == TrialState.RUNNING and "flops" in t.user_attrs]
        return running[0] if running and sum(t.state in FINISHED for t in mine) >= after else None

    while True:
        trial = wait_for(f"a running trial of process {proc.pid}", evaluating)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # a commit the process sent just before it stopped lands meanwhile
        now = next(t for t in trials_of(storage, study) if t.number == trial.number)
        if now.state == TrialState.RUNNING:
            return now
        proc.send_signal(signal.SIGCONT)


def test_a_worker_killed_mid_trial_is_recovered_by_the_other_and_the_count_holds(database: str, tmp_path: Path,
                                                                                 start_nas):
    storage, n = open_storage(database), 8
    first = start_nas("search", *FAST, "--trials", n, "--storage", database, "--study", "pair",
                      "--out", tmp_path / "a", cwd=tmp_path)
    wait_for("the study", lambda: trials_of(storage, "pair"))
    # Machine B joins with the storage and study alone, and works while A holds a trial RUNNING
    second = start_nas("search", "--storage", database, "--study", "pair", cwd=tmp_path / "b")
    killed = freeze_mid_trial(first, storage, "pair", after=1)
    wait_for("a trial of the joined worker", lambda: any(
        pid_of(t) == second.pid and t.state in FINISHED for t in trials_of(storage, "pair")))
    first.kill()
    assert first.wait() == -signal.SIGKILL
    assert second.wait(timeout=300) == 0, logs(tmp_path / "b")

    trials = trials_of(storage, "pair")
    assert counted(trials) == n
    assert [t.number for t in trials] == list(range(len(trials)))  # none lost
    assert all(t.state in FINISHED for t in trials)  # none left running or queued
    assert {pid_of(t) for t in trials if not is_void(t)} == {first.pid, second.pid}
    # The killed trial failed as interrupted, and its genome ran once more, on the live worker
    assert [t.number for t in trials if is_void(t)] == [killed.number]
    assert trials[killed.number].user_attrs["failure"].startswith("interrupted")
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert [(t.user_attrs["retry_of"], t.params, pid_of(t)) for t in retries] == [
        (killed.number, killed.params, second.pid)]
    assert retries[0].user_attrs["genome_hash"] == killed.user_attrs["genome_hash"]
    # No genome evaluated twice: a repeat reuses its twin's result (duplicate_of)
    evaluated = Counter(t.user_attrs["genome_hash"] for t in trials
                        if not is_void(t) and "duplicate_of" not in t.user_attrs)
    assert max(evaluated.values()) == 1
    assert (tmp_path / "b" / "runs" / "pair" / "report.md").is_file()  # B's run directory, B's report


def test_a_driver_killed_mid_run_resumes_from_the_postgres_study(database: str, tmp_path: Path, start_nas):
    storage, n = open_storage(database), 5
    driver = start_nas("search", *FAST, "--trials", n, "--storage", database, "--study", "solo",
                       "--out", tmp_path / "run", cwd=tmp_path)
    killed = freeze_mid_trial(driver, storage, "solo", after=2)
    driver.kill()
    assert driver.wait() == -signal.SIGKILL
    before = trials_of(storage, "solo")
    kept = {t.number: (t.state, t.values) for t in before if t.state in FINISHED}
    assert before[killed.number].state == TrialState.RUNNING  # till the resume finds its process gone

    resumed = start_nas("search", "--resume", tmp_path / "run", cwd=tmp_path / "later")
    assert resumed.wait(timeout=300) == 0, logs(tmp_path / "later")
    assert f"resuming at trial {counted(before)}/{n}" in logs(tmp_path / "later")
    trials = trials_of(storage, "solo")
    assert counted(trials) == n and all(t.state in FINISHED for t in trials)
    assert {number: (t.state, t.values) for number, t in enumerate(trials) if number in kept} == kept
    assert [t.number for t in trials if is_void(t)] == [killed.number]
    assert trials[killed.number].user_attrs["failure"].startswith("interrupted")
    assert [t.params for t in trials if t.user_attrs.get("retry_of") == killed.number] == [killed.params]


def test_a_worker_that_loses_the_race_to_create_the_tables_opens_them(database: str, monkeypatch):
    # Workers started together on a new database: the winner's tables appear between the loser's look and its
    # CREATE TABLE, which PostgreSQL refuses (DuplicateTable); the loser opens them on a second look.
    metadata = models.BaseModel.metadata
    create_all, raced = metadata.create_all, []

    def lose_the_race(bind, tables=None, checkfirst=True) -> None:
        if not raced:
            raced.append(True)
            winner = sqlalchemy.create_engine(database)
            create_all(winner)
            winner.dispose()
            checkfirst = False  # the look said "no tables" before the winner's commit
        create_all(bind, tables=tables, checkfirst=checkfirst)

    monkeypatch.setattr(metadata, "create_all", lose_the_race)
    storage = open_storage(database)
    assert raced
    assert optuna.create_study(storage=storage, study_name="raced").study_name == "raced"
