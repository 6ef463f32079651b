"""The local runner and shared-storage workers: real processes on one real SQLite storage.

Recovery rules in brief: a RUNNING trial whose process is gone (this host) or whose heartbeat is stale (any host)
is failed as ``interrupted`` and queued once more; a trial asked after the count was reached is ``surplus``;
neither counts toward ``--trials``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from runners.base import (
    SCREENING,
    WORKER,
    claim,
    counted,
    is_duplicate,
    is_surplus,
    is_void,
    recover,
)
from runners.slots import device_slot
from runners.storage import open_storage
from tests.conftest import run_nas
from tests.test_search_cli import RESULT_FILES, rows


def finished(run_dir: Path, study: str = "search") -> list[optuna.trial.FrozenTrial]:
    loaded = optuna.load_study(storage=f"sqlite:///{run_dir / 'study.db'}", study_name=study)
    return loaded.get_trials(deepcopy=False)


def new_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'study.db'}"), study_name="s")


def test_a_worker_that_finds_the_run_file_before_the_study_waits_for_the_search(tmp_path: Path):
    """Two workers started at once: the second may find the first's run file written and its study not yet
    created, or created without the search's record. It waits for the record and joins, rather than take the
    folder for another run (one worker of the test below failed so in a suite run of 2026-12-04)."""
    from nas.search.options import SearchOptions
    from nas.search.run import _search_under_way
    from nas.search.rundir import RUN_FILE

    shared = tmp_path / "shared"
    shared.mkdir()
    storage = f"sqlite:///{shared / 'study.db'}"
    options = SearchOptions(space="tiny", storage=storage, study="s")
    (shared / RUN_FILE).write_text("the first worker's\n")

    def first_worker() -> None:
        time.sleep(0.5)
        study = optuna.create_study(storage=open_storage(storage), study_name="s")
        time.sleep(0.5)
        study.set_user_attr("nas.run", {"options": options.model_dump(), "space": "the space\n"})

    thread = threading.Thread(target=first_worker)
    thread.start()
    found = _search_under_way(options, shared)
    thread.join()
    assert found is not None and found[0].study == "s" and found[1] == "the space\n"


def test_two_workers_started_at_once_on_a_new_study_both_join_and_the_counts_add_up(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    (tmp_path / "shared").mkdir()
    command = [sys.executable, "-m", "nas", "search", "--space", "tiny", "--trials", "16", "--latency-repeats", "2",
               "--screen", "500",
               "--storage", storage, "--study", "shared"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = finished(tmp_path / "shared", "shared")
    assert counted(trials) == 16 and not any(t.state == TrialState.RUNNING for t in trials)
    by_worker = Counter(t.user_attrs["worker"] for t in trials if not is_void(t) and not is_duplicate(t))
    assert len(by_worker) == 2 and sum(by_worker.values()) == 16  # both joined; together exactly the count
    # Their run directory is the storage's folder, with a local run's files
    assert all((tmp_path / "shared" / name).exists() for name in RESULT_FILES)
    counted_rows = [r for r in rows(tmp_path / "shared") if r["state"] not in ("interrupted", "surplus", "duplicate")]
    assert len(counted_rows) == 16


ASK_AT = """
import sys, time
import optuna
from runners.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(storage=open_storage(sys.argv[1]), study_name="s")
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(" ".join(str(study.ask().number) for _ in range(30)))
"""


def test_two_workers_asking_at_once_never_take_the_same_queued_trial(tmp_path: Path):
    # Before the storage's state change began IMMEDIATE, this took one queued trial twice in 4 of 5 tries
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    for x in range(60):
        study.enqueue_trial({"x": x}, skip_if_exists=False)
    start = time.time() + 4  # both processes imported and waiting: they ask together
    workers = [subprocess.Popen([sys.executable, "-c", ASK_AT, url, str(start)], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).parent.parent) for _ in range(2)]
    taken = [set(map(int, w.communicate(timeout=120)[0].split())) for w in workers]
    assert len(taken[0]) == len(taken[1]) == 30 and not taken[0] & taken[1]
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())


def test_workers_flag_starts_processes_that_share_one_count(tmp_path: Path):
    # 24 trials of 1-2 s (zero-cost scores and latency): long enough that the started worker, ~5 s to import and
    # join, gets some
    done = run_nas("search", "--space", "tiny", "--trials", "24", "--latency-repeats", "2", "--workers", "2",
                   "--screen", "1000",
                   "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "runner local (2 workers)" in done.stderr
    trials = finished(tmp_path / "run")
    assert counted(trials) == 24
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # the started worker ran trials too
    assert (tmp_path / "run" / "workers" / "worker-1.log").is_file()
    assert all((tmp_path / "run" / name).exists() for name in RESULT_FILES)
    # The references were scored by this process while the started worker took the first trials
    scores = json.loads((tmp_path / "run" / "references.json").read_text())["scores"]
    assert scores and all(s["score"] is not None for s in scores.values())
    assert done.stderr.index("scoring 4 reference architectures") < done.stderr.index("expected run time")


def test_a_dead_workers_trial_is_failed_and_retried_once(tmp_path: Path):
    study = new_study(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for params in ({"x": 1}, {"x": 2}, {"x": 3}):
        study.enqueue_trial(params)
    gone, quiet, alive = (study.ask() for _ in range(3))
    for trial in (gone, quiet, alive):
        trial.suggest_int("x", 0, 9)
        claim(trial)
    gone.set_user_attr("worker", f"{WORKER.rpartition(':')[0]}:{dead.pid}")
    gone.set_user_attr("stage", "zero-cost")  # what the sampler planned it as, which its retry is again
    gone.set_user_attr(SCREENING, True)
    quiet.set_user_attr("worker", "another-host:4242")
    quiet.set_user_attr("heartbeat", time.time() - 120)  # that host stopped beating two minutes ago

    assert recover(study, grace_s=60) == 2
    trials = study.get_trials(deepcopy=False)
    failures = {t.number: t.user_attrs.get("failure", "") for t in trials}
    assert failures[gone.number].startswith("interrupted (its process")
    assert failures[quiet.number].startswith("interrupted (no heartbeat from another-host:4242")
    assert trials[alive.number].state == TrialState.RUNNING  # this process is alive: left alone
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [gone.number, quiet.number]
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in retries) == [1, 2]
    again = next(t for t in retries if t.user_attrs["retry_of"] == gone.number)
    assert again.user_attrs["stage"] == "zero-cost" and again.user_attrs[SCREENING]

    # A retry that dies too is not queued again: a genome that kills its worker must not loop.
    retry = study.ask()
    assert retry.number in {t.number for t in retries}
    retry.set_user_attr("worker", "another-host:4242")
    retry.set_user_attr("heartbeat", time.time() - 120)
    assert recover(study, grace_s=60) == 1
    assert len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) == 1  # only the other retry


def test_a_trial_just_asked_and_not_yet_claimed_is_left_to_its_worker(tmp_path: Path):
    study = new_study(tmp_path)
    asked = study.ask()  # another worker's: ask() samples it before that worker can claim it
    assert recover(study, grace_s=60) == 0
    assert study.get_trials(deepcopy=False)[asked.number].state == TrialState.RUNNING
    claim(asked)  # and its worker can still claim it


def test_a_trial_asked_after_the_count_was_reached_is_surplus(tmp_path: Path):
    study = new_study(tmp_path)
    first, second, third = (study.ask() for _ in range(3))
    study.tell(first, 1.0)
    assert not is_surplus(study, second.number, target=2)
    assert is_surplus(study, third.number, target=2)  # two live trials precede it
    study.tell(second, state=TrialState.FAIL)  # a trial's own failure still counts
    assert is_surplus(study, third.number, target=2)


def test_a_latency_measurement_waits_for_compute_and_holds_the_device_alone(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NAS_LOCK_DIR", str(tmp_path))
    events: list[str] = []
    computing = threading.Event()

    def compute() -> None:
        with device_slot("cpu", exclusive=False):
            events.append("compute start")
            computing.set()
            time.sleep(0.3)
            events.append("compute end")

    def measure() -> None:
        computing.wait()
        with device_slot("cpu", exclusive=True):
            events.append("measure")

    threads = [threading.Thread(target=compute), threading.Thread(target=measure)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert events == ["compute start", "compute end", "measure"]
    # Two computations share the device
    with device_slot("cpu", exclusive=False), device_slot("cpu", exclusive=False):
        pass


def test_a_worker_joins_a_search_under_way_from_its_storage_alone(tmp_path: Path):
    journal = f"journal:{tmp_path / 'search.log'}"  # a journal file: the storage for NFS and the like
    first = run_nas("search", "--space", "tiny", "--budget", "10MFLOPs", "--trials", "4", "--latency-repeats", "2",
                    "--storage", journal, "--study", "hybrid", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    # Another machine knows only the storage and the study: the space and budget come from the study
    elsewhere = tmp_path / "machine_b"
    elsewhere.mkdir()
    joined = run_nas("search", "--storage", journal, "--study", "hybrid", "--trials", "7", cwd=elsewhere)
    assert joined.returncode == 0, joined.stderr
    assert "joining study 'hybrid' at trial 4/7" in joined.stderr
    run_b = elsewhere / "runs" / "hybrid"
    assert (run_b / "space.yaml").read_text() == (tmp_path / "a" / "space.yaml").read_text()
    assert "budget: 10MFLOPs" in (run_b / "run.yaml").read_text()
    study = optuna.load_study(storage=open_storage(journal), study_name="hybrid")
    assert counted(study.get_trials()) == 7


def test_runner_flags_that_contradict_each_other_fail_before_any_work(tmp_path: Path):
    cases = {("--address", "auto"): "add --runner ray",
             ("--runner", "ray", "--device", "cuda"): "needs --gpus-per-trial",
             ("--workers", "0"): "--workers must be at least 1"}
    for flags, message in cases.items():
        done = run_nas("search", "--space", "tiny", *flags, "--out", tmp_path / "never")
        assert done.returncode == 2 and message in done.stderr, (flags, done.stderr)
        assert not (tmp_path / "never").exists()


def test_the_optuna_internals_the_runners_rely_on_exist(tmp_path):
    """An upgrade of Optuna that moves what ``runners.optuna_internals`` reads fails here, not in a search."""
    from runners import optuna_internals

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    objects = {"Study": study, "Trial": trial, "FrozenTrial": study.trials[0],
               "BaseDistribution": optuna.distributions.CategoricalDistribution([1, 2])}
    assert {name for name, _ in optuna_internals.USED} == set(objects)
    for name, attribute in optuna_internals.USED:
        assert hasattr(objects[name], attribute), f"optuna.{name} no longer has {attribute}"
    assert optuna_internals.storage_of(study) is study._storage
    assert optuna_internals.storage_id(trial) == study.trials[0]._trial_id
    assert optuna_internals.trial_for_id(study, optuna_internals.storage_id(trial)).number == trial.number
    assert optuna_internals.contains(objects["BaseDistribution"], 2)
    assert not optuna_internals.contains(objects["BaseDistribution"], 3)
    study.enqueue_trial({"x": 1.0})
    enqueued = study.ask()
    assert optuna_internals.is_enqueued(study.trials[enqueued.number])
    assert not optuna_internals.is_enqueued(study.trials[trial.number])
