"""`nas search` and `nas report` as a user runs them: real subprocesses, real SQLite storage, small spaces."""
from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from nas.cost import analytic_cost
from nas.flags import flag_name, option_fields
from nas.io import load_genome
from nas.search import SearchOptions
from nas.supernet import SupernetTrainOptions
from tests.conftest import run_nas
from tests.test_search import SMALL_SPACE

RESULT_FILES = ["run.yaml", "space.yaml", "study.db", "trials.csv", "best.yaml", "best_model.py", "pareto.png",
                "report.md", "references.json"]


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def test_search_writes_the_run_directory_and_resume_extends_it(tmp_path: Path):
    run_dir = tmp_path / "run"
    done = run_nas("search", "--space", "tiny", "--budget", "10MFLOPs", "--trials", "4", "--seed", "3",
                   "--latency-repeats", "3", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    assert "expected run time" in done.stderr and "trials:" in done.stderr
    for name in RESULT_FILES:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "pareto").glob("*.yaml"))
    table = rows(run_dir)
    assert len(table) == 4 and {"genome_hash", "flops", "latency_ms", "score", "state", "failure",
                                "duration", "t_build", "t_score", "t_latency"} <= set(table[0])
    # best_model.py runs on its own, and the winner is within the FLOPs budget
    standalone = subprocess.run([sys.executable, str(run_dir / "best_model.py")], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
    assert standalone.returncode == 0, standalone.stderr
    assert analytic_cost(load_genome(run_dir / "best.yaml")).flops <= 10e6
    assert "Pareto front" in (run_dir / "report.md").read_text()

    resumed = run_nas("search", "--resume", run_dir, "--trials", "6", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert len(rows(run_dir)) == 6
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["budget"] == "10MFLOPs"


def test_report_rebuilds_every_file_from_the_storage(tmp_path: Path):
    """Also: the second stage's neighborhood attention is a mixer type the proxy objective's corpora never held
    (no shipped space offers it), and the report says the winner's score is silent on it; and the cascade's
    surrogate of a proxy search is the score's known data-free part plus a forest for the rest."""
    space = tmp_path / "small.yaml"
    natten = {"type": "neighborhood_attention", "kernel": 3, "heads": 2}
    with_natten = {**SMALL_SPACE, "stages": [SMALL_SPACE["stages"][0],
                                             {**SMALL_SPACE["stages"][1], "block": {"mixer": natten}}]}
    space.write_text(yaml.safe_dump(with_natten))
    run_dir = tmp_path / "run"
    done = run_nas("search", "--space", space, "--budget", "none", "--second", "params", "--trials", "5",
                   "--quiet", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    before = (run_dir / "trials.csv").read_text()
    for name in ["trials.csv", "best.yaml", "best_model.py", "pareto.png", "report.md"]:
        (run_dir / name).unlink()
    report = run_nas("report", run_dir)
    assert report.returncode == 0, report.stderr
    assert "5 trials" in report.stdout
    for name in RESULT_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "trials.csv").read_text() == before
    silent = [line for line in (run_dir / "report.md").read_text().splitlines() if "corpora never held" in line]
    assert len(silent) == 1 and "`at_level:1:neighborhood_attention`" in silent[0]
    assert "The surrogate (the score's data-free part, known exactly, plus a random forest" in (
        run_dir / "report.md").read_text()


def test_an_infeasible_budget_fails_fast_with_the_smallest_cost(tmp_path: Path):
    start = time.perf_counter()
    done = run_nas("search", "--space", "tiny", "--budget", "1MFLOPs", "--out", tmp_path / "run")
    assert done.returncode == 2
    assert "no genome of tiny fits the budget" in done.stderr and "smallest found costs" in done.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run" / "study.db").exists()


def test_a_training_search_on_synthetic_data_prunes_and_finishes(tmp_path: Path):
    space = tmp_path / "small.yaml"
    space.write_text(yaml.safe_dump(SMALL_SPACE))
    run_dir = tmp_path / "run"
    done = run_nas("search", "--space", space, "--objective", "train", "--data", "synthetic", "--data-limit", "96",
                   "--epochs", "3", "--trials", "8", "--sampler", "random", "--budget", "none", "--quiet",
                   "--out", run_dir)
    assert done.returncode == 0, done.stderr
    states = [row["state"] for row in rows(run_dir) if row["state"] != "duplicate"]  # duplicates do not count
    assert len(states) == 8 and "pruned" in states and "feasible" in states
    best = load_genome(run_dir / "best.yaml")
    assert best.num_classes == yaml.safe_load((run_dir / "space.yaml").read_text())["num_classes"]


def test_help_lists_every_option():
    done = run_nas("search", "--help")
    for flag in ["--space", "--budget", "--latency", "--params", "--device", "--objective", "--data", "--trials",
                 "--timeout", "--sampler", "--seed", "--out", "--resume", "--storage", "--study", "--second",
                 "--quiet", "--runner", "--workers", "--address", "--gpus-per-trial", "--cpus-per-trial",
                 "--heartbeat"]:
        assert flag in done.stdout


@pytest.mark.parametrize(("command", "model"), [(["search"], SearchOptions),
                                                (["supernet", "train"], SupernetTrainOptions)])
def test_every_option_is_a_flag_whose_help_is_its_description(command, model, capsys):
    """The flags are made from the options model: a field without a flag or a description fails here."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    shown = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    for name, field in option_fields(model).items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert flag_name(model, name) in shown
        assert "".join(field.description.split()) in shown, name


def test_a_flag_says_its_default_taken_from_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    shown = capsys.readouterr().out
    assert "(default: 4GFLOPs)" in shown and "(default: cascade)" in shown
    assert "{proxy,train,supernet}" in shown  # custom is a Python evaluate=, not a flag
