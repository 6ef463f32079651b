"""nas.search through its Python API, on small spaces at 32x32 with real SQLite storage in tmp_path.

Most tests pass ``evaluate=`` (a custom objective) and ``second="params"`` or ``"flops"`` so that a trial takes
milliseconds; the built-in proxy and latency paths run in test_search_cli.py.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal, get_args, get_origin

import optuna
import pytest
from optuna.trial import TrialState

import nas
from nas.cost import analytic_cost
from nas.flags import option_fields
from nas.search import InfeasibleBudget, RegularizedEvolutionSampler, SearchOptions
from nas.search import run as search_run

ROOT = Path(__file__).resolve().parents[1]

# Four stages' worth of choices kept tiny: 2 x 2 x 2 x (3 + 2) = 40 genomes, 0.4-2.3 MFLOPs at 32x32.
SMALL_SPACE = {
    "name": "small",
    "input": {"channels": 3, "resolution": 32},
    "num_classes": 10,
    "stem": {"type": "conv", "kernel": 4, "stride": 4},
    "defaults": {"norm": "layernorm", "mlp": {"type": "mlp", "ratio": 2},
                 "downsample": {"type": "conv", "kernel": 2, "stride": 2}},
    "stages": [
        {"depth": {"int": [1, 2]}, "width": {"choice": [16, 32]},
         "block": {"mixer": {"choice": [{"type": "dwconv", "kernel": {"choice": [3, 5, 7]}},
                                        {"type": "attention", "head_dim": {"choice": [8, 16]}}]}}},
        {"depth": 1, "width": {"choice": [32, 64]}, "block": {"mixer": {"type": "pooling"}}},
    ],
    "head": {"type": "linear"},
}


def score_by_width(genome, model) -> float:
    """A cheap stand-in objective: wider, deeper first stages score higher."""
    return float(genome.stages[0].width * genome.stages[0].depth + genome.stages[1].width / 10)


def flops_of(genome) -> int:
    return analytic_cost(genome).flops


def stored(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(storage=f"sqlite:///{run_dir / 'study.db'}", study_name="search")
    return study.get_trials(deepcopy=False)


def test_a_raising_trial_and_a_nan_are_recorded_and_the_search_goes_on(tmp_path: Path):
    calls = []

    def flaky(genome, model):
        calls.append(genome.content_hash())
        if len(calls) == 1:
            raise RuntimeError("boom in the user's objective")
        if len(calls) == 2:
            return float("nan")
        return score_by_width(genome, model)

    result = nas.search(SMALL_SPACE, budget=None, trials=8, sampler="random", second="params",
                        evaluate=flaky, out=tmp_path / "run", quiet=True)
    trials = stored(tmp_path / "run")
    failures = [t.user_attrs.get("failure") for t in trials if t.state == TrialState.FAIL]
    assert "RuntimeError: boom in the user's objective" in failures
    assert "score is nan (not finite)" in failures
    assert result.counts["trials"] == 8 and result.counts["failed"] >= 2
    assert result.best is not None and math.isfinite(result.best.score)
    csv = (tmp_path / "run" / "trials.csv").read_text()
    assert "boom in the user's objective" in csv and "score is nan" in csv


def test_duplicate_genomes_are_evaluated_once_and_an_exhausted_space_ends_the_search(tmp_path: Path, monkeypatch):
    space = {**SMALL_SPACE, "stages": [
        {"depth": 1, "width": {"choice": [16, 32]}, "block": {"mixer": {"type": "pooling"}}},
        {"depth": 1, "width": 32, "block": {"mixer": {"type": "pooling"}}}]}
    evaluated = []

    def count(genome, model):
        evaluated.append(genome.content_hash())
        return score_by_width(genome, model)

    monkeypatch.setattr(search_run, "DUPLICATE_STREAK", 10)
    result = nas.search(space, budget=None, trials=6, sampler="random", second="flops", evaluate=count,
                        references="none", out=tmp_path / "run", quiet=True)  # trials' evaluations only
    # two genomes in the space: both evaluated once; duplicates do not use up trials, and ten in a row end it
    assert len(evaluated) == len(set(evaluated)) == 2
    assert result.counts["trials"] == 2
    trials = stored(tmp_path / "run")
    duplicates = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert result.counts["duplicates"] == len(duplicates) >= 10
    assert all("duplicate_of" in t.user_attrs for t in trials[-10:])
    for dup in duplicates:
        original = trials[dup.user_attrs["duplicate_of"]]
        assert dup.user_attrs["genome_hash"] == original.user_attrs["genome_hash"]
        assert dup.values == original.values


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "evolution"])
def test_every_sampler_respects_the_budget_and_never_builds_over_it(tmp_path: Path, sampler: str):
    budget = 1_200_000  # about half the space's genomes fit
    built = []

    def check(genome, model):
        assert flops_of(genome) <= budget, "an over-budget genome was built"
        built.append(genome.content_hash())
        return score_by_width(genome, model)

    result = nas.search(SMALL_SPACE, budget=f"{budget}", trials=12, sampler=sampler, seed=1, second="flops",
                        evaluate=check, out=tmp_path / sampler, quiet=True)
    assert built, "no genome was built"
    trials = stored(tmp_path / sampler)
    over = [t for t in trials if t.user_attrs.get("estimated")]
    assert all(t.constraints["flops"] > 0 for t in over)  # recorded, infeasible, never built
    assert all(p.flops <= budget for p in result.pareto)
    assert result.best is not None and result.best.flops <= budget
    # the Pareto front: no feasible trial is better in both score and FLOPs than a front member
    for p in result.pareto:
        assert not any(t.values[0] > p.score and t.values[1] < p.second for t in trials
                       if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible"))


def test_regularized_evolution_mutates_one_choice_of_a_tournament_winner():
    sampler = RegularizedEvolutionSampler(population=4, tournament=2, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: t.suggest_int("a", 0, 9) + t.suggest_categorical("b", ["x", "y", "z"]).count("z"),
                   n_trials=20)
    trials = study.get_trials()
    for child in trials[4:]:
        parents = trials[max(0, child.number - 4):child.number]
        # every child is one change away from some member of the population it was bred from
        assert any(sum(child.params[k] != p.params[k] for k in child.params) == 1 for p in parents)


def test_an_infeasible_budget_stops_before_any_trial_with_the_smallest_cost(tmp_path: Path):
    start = time.perf_counter()
    with pytest.raises(InfeasibleBudget, match=r"smallest found costs .*FLOPs") as err:
        nas.search(SMALL_SPACE, budget="100KFLOPs", out=tmp_path / "run", evaluate=score_by_width, quiet=True)
    assert err.value.exit_code == 2
    assert time.perf_counter() - start < 20
    assert not (tmp_path / "run" / "study.db").exists()


SLOW_SEARCH = """\
import sys, time
import nas

def slow(genome, model):
    time.sleep(0.4)
    return float(genome.stages[0].width * genome.stages[0].depth)

space = {space!r}
nas.search(space, budget=None, trials=8, sampler="random", second="params", evaluate=slow,
           out=sys.argv[1], resume=len(sys.argv) > 2, quiet=True)
"""


def test_sigkill_mid_trial_then_resume_keeps_finished_trials_and_reruns_the_interrupted(tmp_path: Path):
    script = tmp_path / "slow_search.py"
    script.write_text(SLOW_SEARCH.format(space=SMALL_SPACE))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill while a trial runs, after at least two have finished
            time.sleep(0.1)
            if not (run_dir / "study.db").exists():
                continue
            try:
                trials = stored(run_dir)
            except Exception:  # noqa: BLE001 - the study is still being created
                continue
            states = [t.state for t in trials]
            if states.count(TrialState.COMPLETE) >= 2 and states[-1] == TrialState.RUNNING:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: t.values for t in stored(run_dir) if t.state == TrialState.COMPLETE}
    assert len(before) >= 2

    resumed = subprocess.run([sys.executable, str(script), str(run_dir), "resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = stored(run_dir)
    interrupted = [t for t in after if str(t.user_attrs.get("failure", "")).startswith("interrupted")]
    assert len(interrupted) == 1
    assert {t.number: t.values for t in after if t.number in before} == before
    assert not any(t.state == TrialState.RUNNING for t in after)
    # stops at the original trial count, the interrupted one replaced (duplicates reuse a result: not counted)
    finished = [t for t in after if t not in interrupted and "duplicate_of" not in t.user_attrs]
    assert len(finished) == 8
    assert (run_dir / "best.yaml").is_file()


class _Started(Exception):
    """Raised in place of starting a run: what the search was asked for is in ``args``."""


@pytest.fixture
def asked(monkeypatch) -> dict:
    """What ``nas.search`` passes on to start a run, instead of starting it."""
    seen: dict = {}

    def started(space, out, given, changes, evaluate):
        seen.clear()
        seen.update(given, **changes, space=space)
        raise _Started

    monkeypatch.setattr(search_run, "_started", started)
    return seen


def example(field) -> object:
    """A value the option's type accepts: its default, else one made from the type."""
    if field.default is not None:
        return field.default
    kind = next(a for a in get_args(field.annotation) if a is not type(None))
    return get_args(kind)[-1] if get_origin(kind) is Literal else {int: 2, float: 0.5, str: "x"}[kind]


def test_every_option_is_a_keyword_of_search(asked: dict):
    for name, field in option_fields(SearchOptions).items():
        value = example(field)
        with pytest.raises(_Started):
            nas.search(**{name: value})
        assert asked[name] == value, name


def test_options_and_keywords_together_the_keywords_win(asked: dict):
    with pytest.raises(_Started):
        nas.search(options=SearchOptions(space="tiny", budget="none", trials=5, sampler="random"), trials=7,
                   timeout="2h")
    # what the options object set and the keywords, parsed; defaults are not "given"
    assert asked == {"space": "tiny", "budget": None, "sampler": "random", "trials": 7, "timeout": 7200.0}


def test_an_unknown_keyword_names_the_option_meant():
    with pytest.raises(TypeError, match="'budgett'.*did you mean 'budget'"):
        nas.search("tiny", budgett="4GFLOPs")
