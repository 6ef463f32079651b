"""``--runner ray`` on a real Ray: a 2-CPU head node on loopback (``ray start --head``) that the searches join
with ``--address``, and one search that starts and stops its own local instance."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from runners.base import counted, is_screening
from tests.conftest import run_nas
from tests.test_search_cli import RESULT_FILES, rows

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A Ray head node with 2 CPUs on loopback, as `ray start --head` makes one; its address."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # Token authentication (on by default since Ray 2.5x) is for clusters on a network; this one is loopback
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
                             str(port), "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp),
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}'); ray.shutdown()"],
                               capture_output=True, timeout=120)
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head node did not come up in 2 minutes")
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def stored(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(storage=f"sqlite:///{run_dir / 'study.db'}", study_name="search").get_trials()


def _raylets() -> int:
    return len(subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout.split())


def test_a_ray_run_directory_has_the_local_format_and_its_ray_instance_stops_with_it(tmp_path: Path):
    common = ["search", "--space", "tiny", "--trials", "6", "--latency-repeats", "2", "--seed", "1"]
    local = run_nas(*common, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    raylets = _raylets()
    on_ray = run_nas(*common, "--runner", "ray", "--workers", "2", "--out", tmp_path / "ray")
    assert on_ray.returncode == 0, on_ray.stderr
    assert "runner ray" in on_ray.stderr
    assert _raylets() == raylets  # the local Ray instance it started is gone

    def files(run: Path) -> set[str]:
        return {p.name for p in run.iterdir() if p.name not in ("ray",) and not p.name.startswith("study.db-")}

    assert files(tmp_path / "ray") == files(tmp_path / "local") >= set(RESULT_FILES)
    ray_rows, local_rows = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert list(ray_rows[0]) == list(local_rows[0])  # the same columns
    assert len(ray_rows) == 6 and {r["state"] for r in ray_rows} <= {"feasible", "duplicate", "over_budget"}
    assert counted(stored(tmp_path / "ray")) == 6
    report = run_nas("report", tmp_path / "ray")
    assert report.returncode == 0 and "6 trials" in report.stdout


FAULTY_SEARCH = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import nas

    MARKS = Path(sys.argv[2])

    def first(name):
        try:
            os.close(os.open(MARKS / name, os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False

    def faulty(genome, model):
        if first("kill"):
            os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker process dies mid-trial
        if first("raise"):
            raise RuntimeError("boom in a Ray trial")
        return float(sum(s.width * s.depth for s in genome.stages))

    nas.search("tiny", budget=None, trials=6, second="params", evaluate=faulty, runner="ray", workers=2,
               address=sys.argv[3], out=sys.argv[1], quiet=True)
""")


def test_a_killed_ray_worker_and_a_raising_trial_are_recorded_and_the_count_is_met(tmp_path: Path, cluster: str):
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY_SEARCH)
    (tmp_path / "marks").mkdir()
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "marks"), cluster],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    trials = stored(tmp_path / "run")
    failures = {t.number: t.user_attrs.get("failure") for t in trials if t.state == TrialState.FAIL}
    killed = [n for n, f in failures.items() if f == "interrupted (its Ray worker died)"]
    assert len(killed) == 1
    assert "RuntimeError: boom in a Ray trial" in failures.values()
    retried = [t for t in trials if t.user_attrs.get("retry_of") == killed[0]]
    assert len(retried) == 1 and retried[0].params == trials[killed[0]].params  # the same genome, once more
    assert counted(trials) == 6 and not any(t.state == TrialState.RUNNING for t in trials)
    assert (tmp_path / "run" / "best.yaml").is_file()


def test_a_training_search_on_ray_reports_epochs_and_asha_decides(tmp_path: Path, cluster: str):
    done = run_nas("search", "--space", "tiny", "--objective", "train", "--data", "synthetic", "--data-limit", "64",
                   "--epochs", "2", "--trials", "4", "--pruner", "median", "--runner", "ray", "--address", cluster,
                   "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    trials = stored(tmp_path / "run")
    assert counted(trials) == 4
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not is_screening(t)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and all("accuracy_epoch_2" in t.user_attrs for t in complete)
    scoring = [t for t in trials if is_screening(t)]  # the zero-cost stage ahead of the trainings, on Ray too
    assert scoring and all(t.user_attrs["stage"] == "zero-cost" for t in scoring)
    assert all(t.user_attrs["pruned_at"].endswith("(ASHA)") for t in pruned)
    failed = sum(t.state == TrialState.FAIL and not is_screening(t) for t in trials)
    assert len(complete) + len(pruned) + failed + len(scoring) == len(trials)


def test_a_training_search_on_ray_promotes_through_a_middle_rung_from_each_genomes_checkpoint(tmp_path: Path,
                                                                                                cluster: str):
    # --rungs auto with 1 then 4 epochs: the first stage, a rung at 2 epochs, then the long schedule's end
    done = run_nas("search", "--space", "tiny", "--objective", "train", "--data", "digits", "--data-limit", "100",
                   "--epochs", "1", "--long-epochs", "4", "--rungs", "auto", "--reduction-factor", "3",
                   "--trials", "14", "--references",
                   "none", "--runner", "ray", "--address", cluster, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    trials = [t for t in stored(tmp_path / "run") if t.state == TrialState.COMPLETE and not is_screening(t)]
    by_number = {t.number: t for t in trials}
    stages = [(t.user_attrs["genome_hash"], t.user_attrs["stage"]) for t in trials]
    assert len(stages) == len(set(stages))  # no genome evaluated twice at one stage
    middle = [t for t in trials if t.user_attrs["stage"] == "train-epoch-2"]
    assert middle, "no promotion to the middle rung in 14 trials"
    for promoted in middle + [t for t in trials if t.user_attrs["stage"] == "train-long"]:
        source = by_number[promoted.user_attrs["promoted_from"]]
        assert source.user_attrs["genome_hash"] == promoted.user_attrs["genome_hash"]
        # trained on from the source's checkpoint: the epochs it had are restored, not trained again
        restored = {k: v for k, v in source.user_attrs.items() if k.startswith("accuracy_epoch_")}
        assert restored and all(promoted.user_attrs[k] == v for k, v in restored.items())
        assert f"accuracy_epoch_{promoted.user_attrs['epochs']}" in promoted.user_attrs


SLOW_SEARCH = textwrap.dedent("""
    import sys, time
    import nas

    def slow(genome, model):
        time.sleep(1.0)
        return float(sum(s.width * s.depth for s in genome.stages))

    nas.search("tiny", budget=None, trials=8, second="params", evaluate=slow, runner="ray", workers=2,
               address=sys.argv[2], out=sys.argv[1], resume=len(sys.argv) > 3, quiet=True)
""")


def test_a_killed_ray_driver_resumes_through_tune_and_keeps_every_finished_trial(tmp_path: Path, cluster: str):
    script, run_dir = tmp_path / "slow.py", tmp_path / "run"
    script.write_text(SLOW_SEARCH)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, str(script), str(run_dir), cluster], env=env,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:  # kill while trials run, after at least two have finished
            time.sleep(0.3)
            try:
                states = [t.state for t in stored(run_dir)]
            except Exception:  # noqa: BLE001 - the study is still being created
                continue
            if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
                break
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    before = {t.number: t.values for t in stored(run_dir) if t.state == TrialState.COMPLETE}
    assert len(before) >= 2 and (run_dir / "ray" / "tuner.pkl").is_file()

    resumed = subprocess.run([sys.executable, str(script), str(run_dir), cluster, "resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = stored(run_dir)
    assert {t.number: t.values for t in after if t.number in before} == before  # nothing finished was lost
    assert counted(after) == 8 and not any(t.state == TrialState.RUNNING for t in after)
    assert (run_dir / "best.yaml").is_file()


def test_the_ray_internals_the_searcher_relies_on_exist():
    """An upgrade of Ray that renames what ``runners.ray`` overrides or reads fails here, not in a search."""
    from ray.tune.search.optuna import OptunaSearch

    from runners.ray import OPTUNA_SEARCH_INTERNALS

    searcher = OptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0, 1)}, metric="score", mode="max")
    missing = [name for name in OPTUNA_SEARCH_INTERNALS if not hasattr(searcher, name)]
    assert not missing, f"Ray's OptunaSearch no longer has {missing}"
