"""Nothing lost, nothing injected, nothing hangs: a run directory is checked before it is used, never written
over, and left as it was when a command fails; `nas search` on the tiny space in real subprocesses."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

import nas
from nas.cli import build_parser
from nas.errors import InputError
from nas.search import run as search_run
from nas.search.progress import Progress
from nas.search.report import trial_counts, write_report
from nas.search.rundir import NewRun, read_run
from tests.conftest import run_nas
from tests.test_search import SMALL_SPACE, score_by_width, stored

# Three trials without latency timing: a finished run in a few seconds.
QUICK = ["--space", "tiny", "--second", "params", "--sampler", "random", "--quiet"]


TRAIN_CASCADE = {"objective": "train", "data": "digits", "sampler": "cascade"}


def quick(out: Path, **options) -> nas.search.SearchResult:
    return nas.search(**{"space": "tiny", "second": "params", "sampler": "random", "trials": 3, "quiet": True,
                         "out": out, **options})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run as a finished `nas search` leaves it: its process gone, so study.db holds every trial (no -wal)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    done = run_nas("search", *QUICK, "--trials", "3", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# --- 1 and 2: a run whose storage or options are damaged is refused, and nothing is changed ----------------------

def test_resume_and_report_refuse_a_run_whose_storage_is_gone_and_change_nothing(run_copy: Path):
    (run_copy / "study.db").unlink()
    before = snapshot(run_copy)
    for command in (["search", "--resume", run_copy, "--trials", "5"], ["report", run_copy]):
        done = run_nas(*command)
        assert done.returncode == 2 and "study.db: missing" in one_line(done), done.stderr
        assert snapshot(run_copy) == before  # no new empty study.db; trials.csv, report.md, best.yaml kept


def _garbage(db: Path) -> None:
    db.write_bytes(b"\x8f not a database \x00" * 300)


def _truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])


def _not_optuna(db: Path) -> None:
    db.unlink()
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE notes (text)")
    connection.commit()
    connection.close()


def _other_study(db: Path) -> None:
    run_yaml = db.parent / "run.yaml"
    run_yaml.write_text(run_yaml.read_text().replace("study: search", "study: other"))


@pytest.mark.parametrize("damage, why", [(Path.unlink, "missing"), (_garbage, "not an SQLite database"),
                                         (_truncated, "unreadable SQLite database"),
                                         (_not_optuna, "not an Optuna storage"), (_other_study, "no study 'other'")])
def test_a_damaged_storage_is_refused_naming_it_and_left_as_it_was(run_copy: Path, damage, why: str):
    damage(run_copy / "study.db")
    before = snapshot(run_copy)
    for attempt in (lambda: nas.search(resume=run_copy, trials=5), lambda: write_report(run_copy)):
        with pytest.raises(InputError, match=why) as err:
            attempt()
        assert str(err.value).startswith(f"{run_copy / 'study.db'}: ") and "\n" not in str(err.value)
        assert snapshot(run_copy) == before


@pytest.mark.parametrize("text, why", [("trials: [3,\nseed: 0\n", "YAML syntax error"),
                                       ("trials: many\n", "trials (line 1): input should be a valid integer"),
                                       ("budget: lots\n", "cannot read 'lots' as a flops budget")])
def test_a_damaged_run_yaml_is_named_with_the_reason(run_copy: Path, text: str, why: str):
    (run_copy / "run.yaml").write_text(text)
    with pytest.raises(InputError, match=re.escape(why)) as err:
        write_report(run_copy)
    assert str(err.value).startswith(str(run_copy / "run.yaml")) and "\n" not in str(err.value)


@pytest.mark.parametrize("option, today, before", [
    ("reduction_factor", 5, 3),  # promotions took the top third
    ("shortlist_growth", 5, 0)])  # the zero-cost short-list was fixed
def test_a_run_written_before_an_option_resumes_as_it_ran(run_copy: Path, option: str, today: int, before: int):
    """A run.yaml without an option added since was written when the search did what that option's old value
    does: it keeps doing so."""
    run_yaml = run_copy / "run.yaml"
    assert getattr(read_run(run_copy)[0], option) == today  # written today: the default, stored
    run_yaml.write_text("\n".join(line for line in run_yaml.read_text().splitlines()
                                  if not line.startswith(f"{option}:")) + "\n")
    assert getattr(read_run(run_copy)[0], option) == before


def test_storage_urls_that_cannot_hold_a_study_are_refused_before_any_work(tmp_path: Path):
    (tmp_path / "garbage.db").write_bytes(b"\x8f garbage \x00" * 300)
    (tmp_path / "garbage.log").write_text("this is no journal\n")
    cases = {f"sqlite:///{tmp_path / 'garbage.db'}": f"{tmp_path / 'garbage.db'}: not an SQLite database",
             f"journal:{tmp_path / 'garbage.log'}": f"{tmp_path / 'garbage.log'}: not an Optuna journal",
             "foo://somewhere/db": "--storage foo://somewhere/db: unknown scheme 'foo'"}
    for url, why in cases.items():
        with pytest.raises(InputError, match=re.escape(why)):
            quick(tmp_path / "never", storage=url)
        assert not (tmp_path / "never").exists()
    done = run_nas("search", *QUICK, "--storage", "foo://somewhere/db", "--out", tmp_path / "never")
    assert done.returncode == 2 and "unknown scheme" in one_line(done)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///", "sqlite+pysqlite:///:memory:",
                                 "sqlite+pysqlite:///file:trials?mode=memory&uri=true"])
def test_an_in_memory_sqlite_storage_is_refused_before_any_work(tmp_path: Path, url: str):
    """Its trials would be gone when the process ends: the run ran them all, then could not report them."""
    with pytest.raises(InputError, match="an in-memory SQLite database"):
        quick(tmp_path / "never", storage=url)
    assert not (tmp_path / "never").exists()
    if url == "sqlite:///:memory:":
        done = run_nas("search", *QUICK, "--storage", url, "--out", tmp_path / "never")
        assert done.returncode == 2 and one_line(done).startswith(f"error: --storage {url}: an in-memory"), done.stderr


def test_a_database_server_that_never_answers_is_refused_after_the_connect_timeout(tmp_path: Path, monkeypatch):
    """A server that accepts the connection and never answers held the command forever, with nothing said."""
    pytest.importorskip("psycopg")
    monkeypatch.setattr("runners.storage.CONNECT_TIMEOUT_S", 2)
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            quick(tmp_path / "never", storage=f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db")
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - what the main thread checks
            outcome.append(err)

    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.perf_counter()
        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(timeout=10)
        assert outcome, "still waiting for the server after 10 s"  # (closing the socket then ends the wait)
    assert time.perf_counter() - started < 10
    assert isinstance(outcome[0], InputError) and "\n" not in str(outcome[0])
    assert str(outcome[0]).startswith(f"postgresql+psycopg://u:***@127.0.0.1:{port}/db: the database did not "
                                      f"answer within 2 s")
    assert not (tmp_path / "never").exists()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe, whose open and read wait for the other end. Should the command under test read it, this end
    comes after 20 s, opens and closes, and the command goes on (an empty file): the test fails rather than
    hangs."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    done = threading.Event()

    def other_end() -> None:
        while not done.wait(20):
            for flags in (os.O_WRONLY, os.O_RDONLY):
                try:
                    os.close(os.open(path, flags | os.O_NONBLOCK))
                except OSError:  # no reader waiting
                    pass

    threading.Thread(target=other_end, daemon=True).start()
    yield path
    done.set()


@pytest.mark.parametrize("command", [("search", "--space", "{fifo}", "--out", "{out}"), ("score", "{fifo}"),
                                     ("search", *QUICK, "--storage", "journal:{fifo}", "--out", "{out}"),
                                     ("score", "/dev/zero")])
def test_a_fifo_or_a_device_given_as_a_file_is_refused_without_reading_it(tmp_path: Path, fifo: Path,
                                                                           command: tuple[str, ...]):
    argv = [arg.format(fifo=fifo, out=tmp_path / "never") for arg in command]
    named = "/dev/zero" if "/dev/zero" in argv else fifo
    done = run_nas(*argv)
    assert done.returncode == 2, done.stderr
    assert one_line(done).startswith(f"error: {named}: not a regular file"), done.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("study", ["../../escaped", "", ".", "..", "a/b", "{tmp}/absolute"])
def test_a_study_name_that_is_not_a_folder_name_is_refused_where_it_names_the_run_folder(
        tmp_path: Path, monkeypatch, study: str):
    """Without --out, a run on a --storage other than SQLite lives in runs/STUDY: a name with a separator, '..'
    or none at all put the run outside runs/, or made runs/ itself the run."""
    here = tmp_path / "home" / "user"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    study = study.format(tmp=tmp_path)
    journal = f"journal:{tmp_path / 'search.log'}"
    with pytest.raises(InputError, match=re.escape(f"--study {study!r}: names the run's folder, runs/STUDY")):
        nas.search(space="tiny", second="params", sampler="random", trials=1, quiet=True, storage=journal,
                   study=study)
    done = run_nas("search", *QUICK, "--trials", "1", "--storage", journal, "--study", study, cwd=here)
    assert done.returncode == 2 and "--study" in one_line(done), done.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("home"), Path("home/user")]


def test_a_new_run_never_writes_over_another_runs_results(run_copy: Path):
    (run_copy / "run.yaml").unlink()  # results without their run.yaml: still results
    before = snapshot(run_copy)
    with pytest.raises(InputError, match="already holds files a search writes"):
        quick(run_copy)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("name", ["space.yaml", "screen.json.gz", "best_weights.pt", "best_weights.yaml"])
def test_a_new_run_refuses_an_out_holding_a_file_it_would_write(tmp_path: Path, name: str):
    """A user's own space.yaml in --out was written over, then deleted when the run was stopped before its first
    trial; the cascade's screen cache and a supernet search's weights would be written over too."""
    out = tmp_path / "project"
    out.mkdir()
    (out / name).write_bytes(b"mine\n")
    done = run_nas("search", *QUICK, "--trials", "1", "--out", out)
    assert done.returncode == 2, done.stderr
    assert one_line(done) == (f"error: {out} already holds files a search writes ({name}); a new run never writes "
                              f"over them: pick another --out")
    assert snapshot(out) == {name: b"mine\n"}


def test_a_new_run_never_writes_over_a_file_that_was_there_when_its_folder_was_checked(tmp_path: Path):
    (tmp_path / "space.yaml").write_text("mine\n")
    fresh = NewRun(tmp_path, f"sqlite:///{tmp_path / 'study.db'}", default_storage=True)
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'space.yaml'}: there before this run started")):
        fresh.write("space.yaml", "the run's\n")
    assert fresh.undo(None)
    assert snapshot(tmp_path) == {"space.yaml": b"mine\n"}


# --- 3 and 4: a command that fails before its first trial leaves nothing behind ------------------------------------

def test_an_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path: Path):
    start = time.perf_counter()
    done = run_nas("search", *QUICK, "--runner", "ray", "--address", "127.0.0.1:1", "--out", tmp_path / "run")
    assert done.returncode == 2, done.stderr
    assert "127.0.0.1:1" in one_line(done) and "30 s" in done.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run").exists()


def test_a_failure_before_the_first_trial_removes_only_what_the_command_created(tmp_path: Path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("the cluster went away")

    monkeypatch.setattr(search_run, "run_trials", unreachable)
    for out in (tmp_path / "new", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
            (out / "notes.txt").write_text("mine")
        with pytest.raises(ConnectionError):
            nas.search(SMALL_SPACE, trials=2, second="params", evaluate=score_by_width, out=out, quiet=True)
    assert not (tmp_path / "new").exists()
    assert [p.name for p in (tmp_path / "existing").iterdir()] == ["notes.txt"]


def test_a_failure_before_the_first_trial_keeps_a_workers_folder_that_was_there(tmp_path: Path, monkeypatch):
    """The run's worker logs go into --out/workers; a folder of that name that was there is the user's, and so
    is every file in it (the undo removed any worker-* file in any workers folder)."""
    def start_workers(count: int, command: list[str], log_dir: Path) -> list:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "worker-1.log").write_text("started\n")  # as runners.local.start_workers logs a worker
        return []

    def unreachable(*args, **kwargs):
        raise ConnectionError("the cluster went away")

    monkeypatch.setattr(search_run, "start_workers", start_workers)
    monkeypatch.setattr(search_run, "run_trials", unreachable)
    out = tmp_path / "project"
    (out / "workers").mkdir(parents=True)
    (out / "workers" / "worker-roster.txt").write_text("mine\n")
    with pytest.raises(ConnectionError):
        quick(out, workers=2)
    assert snapshot(out) == {"workers/worker-roster.txt": b"mine\n"}  # the run's own log went with its files


# --- 5 and 6: resume continues the same search, with fresh samples -----------------------------------------------

def test_resume_refuses_an_option_that_contradicts_the_run_and_accepts_one_that_may_change(run_copy: Path):
    done = run_nas("search", "--resume", run_copy, "--budget", "2GFLOPs", "--trials", "4")
    assert done.returncode == 2, done.stderr
    assert one_line(done) == (f"error: --resume continues {run_copy} with its own --budget 4GFLOPs; drop --budget "
                              f"2GFLOPs or start a new run")
    for given, message in [({"sampler": "tpe"}, "its own --sampler random; drop --sampler tpe"),
                           ({"space": "mobile"}, "its own --space tiny; drop --space mobile"),
                           ({"seed": 1}, "its own --seed 0; drop --seed 1")]:
        with pytest.raises(InputError, match=re.escape(message)):
            nas.search(resume=run_copy, **given)
    # the run's own values, written either way, and the options that may change are no contradiction
    result = nas.search(resume=run_copy, budget="4G", sampler="random", trials=4, quiet=True)
    assert result.counts["trials"] == 4


def test_resume_refuses_a_proxy_run_scored_by_another_fit_of_the_objective(run_copy: Path):
    """A nas whose shipped fit changed (an upgrade that refitted it) would score the new trials on another scale
    than the old: the run records its fit, and such a resume is refused in one line, with nothing changed."""
    from nas.evaluate.proxy import objective_identity
    from nas.search.run import OBJECTIVE_ATTR

    with sqlite3.connect(run_copy / "study.db") as db:  # Optuna's table of study attributes
        (recorded,) = db.execute("SELECT value_json FROM study_user_attributes WHERE key = ?",
                                 (OBJECTIVE_ATTR,)).fetchone()
        assert json.loads(recorded) == objective_identity("tiny")
        assert objective_identity("tiny")["name"] == "tiny"  # the tiny space has a fit of its own
        db.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = ?",  # as an older nas wrote it
                   (json.dumps({"name": "tiny", "digest": "0123456789ab"}), OBJECTIVE_ATTR))
    db.close()
    before = snapshot(run_copy)
    done = run_nas("search", "--resume", run_copy, "--trials", "4")
    assert done.returncode == 2, done.stderr
    assert one_line(done) == (f"error: {run_copy}: its trials were scored by the fit tiny.json (0123456789ab) and "
                              f"this nas has tiny.json ({objective_identity('tiny')['digest']}), whose scores would "
                              "not compare; start a new run, or continue this one with the nas that started it")
    assert snapshot(run_copy) == before


def test_the_report_says_which_fit_of_the_objective_scored_the_run(finished_run: Path):
    from nas.evaluate.proxy import fitted_objective, objective_identity

    report = (finished_run / "report.md").read_text()
    fit = fitted_objective("tiny")  # as objective_fit.py --write measured it
    held_out = fit["held_out_tau"]
    folders = fit["corpora"]
    where = ", ".join(f"benchmarks/results/{folder}: {n}" for folder, n in folders.items())
    assert (f"- proxy objective: fit `tiny.json` ({objective_identity('tiny')['digest']}), {fit['model']}, on "
            f"{sum(folders.values())} trained genomes ({where}); Kendall tau on held-out genomes "
            f"{held_out['digits']:+.3f} (digits), {held_out['patterns']:+.3f} (patterns)\n") in report


@pytest.mark.parametrize("sampler", ["random", "evolution"])
def test_a_resumed_run_samples_new_genomes_rather_than_replaying_its_own(tmp_path: Path, sampler: str):
    quick(tmp_path / "run", sampler=sampler)
    result = nas.search(resume=tmp_path / "run", trials=6, quiet=True)
    trials = stored(tmp_path / "run")
    assert result.counts["duplicates"] == 0
    assert len({t.user_attrs["genome_hash"] for t in trials}) == len(trials) == 6


def test_an_exhausted_space_ends_the_search_with_a_message(tmp_path: Path):
    space = {**SMALL_SPACE, "stages": [
        {"depth": 1, "width": {"choice": [16, 24, 32]}, "block": {"mixer": {"type": "pooling"}}},
        {"depth": 1, "width": 32, "block": {"mixer": {"type": "pooling"}}}]}
    stream = io.StringIO()
    result = nas.search(space, second="params", trials=10, evaluate=score_by_width, out=tmp_path / "run",
                        quiet=True, stream=stream)
    assert "stopped at trial 3/10" in stream.getvalue() and "3 distinct genomes" in stream.getvalue()
    assert result.counts["trials"] == result.counts["feasible"] == 3
    assert result.counts["duplicates"] >= search_run.DUPLICATE_STREAK


# --- 7: the smaller ones ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, message", [
    ({"threads": 0}, "--threads must be at least 1, got 0"), ({"threads": -2}, "--threads must be at least 1"),
    ({"heartbeat": -1}, "--heartbeat must not be negative"), ({"workers": 0}, "--workers must be at least 1"),
    ({"latency_repeats": 0}, "--latency-repeats must be at least 1"),
    ({"shortlist": -1}, "--shortlist must not be negative"),
    ({"shortlist_growth": -1}, "--shortlist-growth must not be negative"),
    ({**TRAIN_CASCADE, "rungs": "2,6"}, r"--rungs must rise strictly between --epochs \(3\) and --long-epochs \(12\)"),
    ({**TRAIN_CASCADE, "rungs": "six"}, "--rungs takes auto, none or a comma list of epochs"),
    ({**TRAIN_CASCADE, "long_epochs": 3}, r"--long-epochs \(3\) must be above --epochs \(3\)"),
    ({**TRAIN_CASCADE, "reduction_factor": 1}, r"--reduction-factor must be at least 2 \(the top half\), got 1")])
def test_out_of_range_options_are_refused(tmp_path: Path, given: dict, message: str):
    with pytest.raises(InputError, match=message):
        quick(tmp_path / "never", **given)
    assert not (tmp_path / "never").exists()


def test_an_out_of_range_option_is_one_line_and_exit_2(tmp_path: Path):
    done = run_nas("search", *QUICK, "--threads", "-2", "--out", tmp_path / "never")
    assert done.returncode == 2 and "--threads must be at least 1" in one_line(done)


def test_out_naming_a_file_is_refused(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--out .*: is a file, not a folder"):
        quick(tmp_path / "file")


def test_the_progress_line_counts_invalid_genomes_apart_from_the_feasible_share():
    stream = io.StringIO()
    Progress(10, stream=stream).update(4, 3, "-", force=True, invalid=1, duplicates=2)
    assert "trial 4/10  feasible 100% (1 invalid, 2 duplicates)" in stream.getvalue()


def test_the_time_left_counts_only_the_trials_since_the_trials_began(monkeypatch):
    # Other workers ended 4 trials while this process scored the references (0-100 s); 2 more took 10 s.
    clock = iter([0.0, 100.0, 110.0])
    monkeypatch.setattr("nas.search.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = Progress(10, stream=stream)
    progress.begin_trials(4)
    progress.update(6, 6, "-", force=True)
    assert "elapsed 1m50s  left ~20s" in stream.getvalue()  # 4 to go at 5 s each, not at 110 s / 6


def test_the_expected_run_time_is_the_median_of_the_trials_finished_so_far():
    """With 2 workers the other ended trials while this process scored the references; the first this process
    finishes is often the cheapest. The estimate takes the median of all finished (9 s), not that one (4 s)."""
    width = {"w": CategoricalDistribution([16, 32])}

    def finished(seconds: float, **attrs) -> FrozenTrial:
        return create_trial(state=TrialState.COMPLETE, values=[1.0], params={"w": 16}, distributions=width,
                            user_attrs={"feasible": True, "genome_hash": str(seconds), "duration": seconds, **attrs})

    stream = io.StringIO()
    trials = [finished(seconds) for seconds in (11.0, 14.0, 8.0, 9.0, 4.0)]
    search_run._say_estimate(Progress(40, stream=stream), trials, 1.0, 35, 2)
    assert "expected run time ~2m46s: the 5 trials finished took a median of 9.00s each" in stream.getvalue()
    # One worker: its first trial is the median-cost genome the run enqueued first.
    first = finished(6.0, calibration=True)
    first.number = 0
    stream = io.StringIO()
    search_run._say_estimate(Progress(40, stream=stream), [first], 1.0, 39, 1)
    assert "expected run time ~4m00s: trial 0 (a median-cost genome) took 6.00s" in stream.getvalue()


def test_each_trial_is_counted_in_exactly_one_category():
    width = {"w": CategoricalDistribution([16, 32])}

    def trial(state, **attrs):
        values = [1.0] if state == TrialState.COMPLETE else None
        return create_trial(state=state, values=values, params={"w": 16}, distributions=width, user_attrs=attrs)

    trials = [trial(TrialState.FAIL, failure="RuntimeError: boom", genome_hash="a"),
              trial(TrialState.FAIL, failure="RuntimeError: boom", genome_hash="a", duplicate_of=0),
              trial(TrialState.FAIL, failure="invalid genome: bad shape"),
              trial(TrialState.COMPLETE, feasible=True, genome_hash="b"),
              trial(TrialState.FAIL, failure="interrupted (Ctrl-C)")]
    counts = trial_counts(trials)
    assert counts == {"trials": 3, "feasible": 1, "infeasible": 0, "invalid": 1, "failed": 1, "pruned": 0,
                      "duplicates": 1, "interrupted": 1, "zero_cost": 0}


def test_a_second_ctrl_c_while_the_report_is_written_says_how_to_write_it(tmp_path: Path, monkeypatch):
    def interrupted(genome, model):
        raise KeyboardInterrupt  # the first Ctrl-C, during a trial

    def interrupted_again(run_dir):
        raise KeyboardInterrupt  # the second, while the report is written

    monkeypatch.setattr(search_run, "write_report", interrupted_again)
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        nas.search(SMALL_SPACE, trials=2, second="params", evaluate=interrupted, out=tmp_path / "run",
                   stream=stream)
    assert f"write it with `nas report {tmp_path / 'run'}`" in stream.getvalue()


def test_an_interrupted_report_leaves_the_previous_files_whole(tmp_path: Path, monkeypatch):
    nas.search(SMALL_SPACE, trials=3, second="params", evaluate=score_by_width, out=tmp_path / "run", quiet=True)
    before = snapshot(tmp_path / "run")

    def half_written(path: Path, trials, multi: bool) -> None:
        path.write_text("number,sta")
        raise KeyboardInterrupt

    monkeypatch.setattr("nas.search.report.write_trials_csv", half_written)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path / "run")
    assert snapshot(tmp_path / "run") == before  # trials.csv whole, and no temporary file left beside it
    assert len(stored(tmp_path / "run")) == 3


def test_every_search_option_has_help():
    search = build_parser()._subparsers._group_actions[0].choices["search"]
    missing = [a.option_strings[0] for a in search._actions if a.option_strings and a.help is None]
    assert not missing
