"""``nas score``: a genome scored the way a search scores it, with each component; as a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas import analytic_cost, compile_model, load_genome
from nas.cli import main
from nas.evaluate.proxy import (
    SPARSE_DESCRIPTORS,
    fitted_objective,
    genome_descriptors,
    objective_scores,
    proxy_score,
)
from nas.io import zoo_names
from nas.search import SearchOptions
from nas.search.scoring import search_inputs
from tests.conftest import run_nas

HYBRID = {
    "name": "my_hybrid", "input": {"channels": 3, "resolution": 32}, "num_classes": 10,
    "stem": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1},
    "defaults": {"norm": "layernorm", "mlp": {"type": "mlp", "ratio": 2},
                 "downsample": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1}},
    "stages": [{"depth": 1, "width": 16, "block": {"mixer": {"type": "dwconv", "kernel": 5}}},
               {"depth": 1, "width": 32, "block": {"mixer": {"type": "attention", "head_dim": 16}}}],
    "head": {"type": "linear", "norm": "layernorm"},
}


@pytest.fixture
def hybrid(tmp_path: Path) -> Path:
    path = tmp_path / "my_hybrid.yaml"
    path.write_text(yaml.safe_dump(HYBRID))
    return path


def test_a_hand_written_hybrid_gets_the_score_a_search_would_give_it(hybrid: Path):
    done = run_nas("score", hybrid, "--second", "none", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    genome = load_genome(hybrid)
    assert result["name"] == "my_hybrid" and result["objective"] == "proxy"
    assert result["params"] == analytic_cost(genome).params and result["flops"] == analytic_cost(genome).flops
    # The same batch, seed and weights as a default search's trial (the default space's own fit): the same
    # score, component by component.
    space = SearchOptions().space
    inputs, _ = search_inputs(genome.to_dict(), SearchOptions())
    expected = proxy_score(genome, compile_model(genome, seed=0), inputs.x, inputs.y, seed=0, fit=space)
    assert result["score"] == pytest.approx(expected["score"], rel=1e-6)
    for name, value in result["components"].items():
        assert value == pytest.approx(expected[name], rel=1e-6), name
    # How the score is made: one contribution per term of the shipped objective, adding up to the score.
    assert set(result["contributions"]) == {f["name"] for f in fitted_objective(space)["features"] if f["weight"]}
    assert sum(result["contributions"].values()) == pytest.approx(result["score"], rel=1e-6)
    # The default space offers attention on its two smallest maps only: its corpus never had it on the second.
    assert result["unweighed"] == ["at_level:1:attention"]
    # Its corpus's genomes have four map sizes, this one two: the widths of the other two add nothing.
    assert result["lacking"] == ["log_width_at:2", "log_width_at:3"]
    assert result["contributions"]["log_width_at:2"] == result["contributions"]["log_width_at:3"] == 0


def test_space_says_whose_search_the_score_is_a_space_without_its_own_fit_gets_the_general_one(hybrid: Path):
    """``--space mobile``: the mobile space has no corpus, so no fit of its own: the objective for any space
    scores it."""
    done = run_nas("score", hybrid, "--second", "none", "--space", "mobile", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["options"]["space"] == "mobile" and result["fit"] == "any"
    genome = load_genome(hybrid)
    inputs, _ = search_inputs(genome.to_dict(), SearchOptions())
    general = proxy_score(genome, compile_model(genome, seed=0), inputs.x, inputs.y, seed=0)
    assert result["score"] == pytest.approx(general["score"], rel=1e-6)
    assert set(result["contributions"]) == {f["name"] for f in fitted_objective()["features"] if f["weight"]}
    assert result["unweighed"] == []  # dwconv on the first map, attention on the second: both in its corpora


def test_the_text_output_lists_the_components_cost_and_latency_of_a_zoo_genome():
    done = run_nas("score", "zoo:mobilenetv2_100", "--resolution", "64", "--latency-repeats", "1",
                   "--proxy-batch", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mobilenetv2_100 (hash ") and "3x64x64 input, 1000 classes, on cpu" in lines[0]
    assert any(line.split()[0] == "score" for line in lines[2:])
    assert {"structural", *objective_scores()} <= {line.split()[0] for line in lines[2:]}
    made = next(i for i, line in enumerate(lines) if line.startswith("how the score is made: the 6 largest of its"))
    # A descriptor the genome lacks is still a term (the corpus's average genome has some of it), marked as such.
    held = genome_descriptors(load_genome("zoo:mobilenetv2_100"))
    for line in lines[made + 1:made + 7]:
        name = line.split()[0]
        lacks = name.startswith(SPARSE_DESCRIPTORS) and not held.get(name)
        assert line.endswith("(none here)") == lacks, line
    assert "latency" in lines[-1] and "params 3.50M" in lines[-1]


def test_with_data_the_scores_see_the_tasks_images_and_the_fit_on_such_scores_weighs_them(hybrid: Path):
    """``--data digits``: the proxy batch is the task's first images and the default space's ``.data`` fit makes
    the score, as in a search given the same data."""
    done = run_nas("score", hybrid, "--data", "digits", "--second", "none", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    options = SearchOptions(data="digits")
    assert result["fit"] == options.objective_fit == "metaformer_hybrid.data"
    genome = load_genome(hybrid)
    inputs, space = search_inputs(genome.to_dict(), options)
    genome = load_genome(space)  # fitted to the data: one grey channel, ten classes
    assert result["input"][0] == 1
    expected = proxy_score(genome, compile_model(genome, seed=0), inputs.x, inputs.y, seed=0,
                           fit=options.objective_fit)
    assert result["score"] == pytest.approx(expected["score"], rel=1e-6)
    assert set(result["contributions"]) == {f["name"] for f in fitted_objective(options.objective_fit)["features"]
                                            if f["weight"]}
    assert sum(result["contributions"].values()) == pytest.approx(result["score"], rel=1e-6)


def test_the_train_objective_scores_the_accuracy_after_training(hybrid: Path):
    done = run_nas("score", hybrid, "--objective", "train", "--data", "digits", "--data-limit", "64",
                   "--epochs", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["num_classes"] == 10 and result["input"][0] == 1  # fitted to the data: one grey channel
    assert set(result["components"]) == {"accuracy_epoch_1", "accuracy_epoch_2"}
    assert result["score"] == result["components"]["accuracy_epoch_2"]
    assert 0 <= result["score"] <= 1


@pytest.mark.parametrize("args, message", [
    (("search_spaces/tiny.yaml",), "a search space, not a genome"),
    (("zoo:convnext_tt",), "unknown zoo genome 'convnext_tt'"),
    (("HYBRID", "--objective", "train"), "--objective train needs --data"),
    (("HYBRID", "--objective", "supernet"), "--objective supernet needs --supernet"),
    (("HYBRID", "--objective", "custom"), "invalid choice: 'custom'"),
    (("HYBRID", "--proxy-batch", "1"), "--proxy-batch needs at least 2 images"),
    (("HYBRID", "--space", "no_such_space.yaml"), "no_such_space.yaml: no such file"),
    (("HYBRID", "--space", "HYBRID"), "not a search space (--space names the space whose search scores it)"),
])
def test_bad_input_is_one_line_and_exit_2(hybrid: Path, args: tuple[str, ...], message: str, capsys):
    argv = ["score", *(str(hybrid) if a == "HYBRID" else a for a in args)]  # HYBRID: the genome file
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own mistakes (an unknown choice) exit from inside
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bad_input_in_a_real_process_is_one_line_and_exit_2():
    done = run_nas("score", "zoo:convnext_tt")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: unknown zoo genome 'convnext_tt'; known: {', '.join(zoo_names())}"], done.stderr


def test_a_genome_whose_forward_pass_fails_is_one_line_not_a_traceback(hybrid: Path, monkeypatch, capsys):
    from blocks.attention import Attention

    def broken(self, x):
        raise RuntimeError("shapes cannot be multiplied (8x16 and 32x32)")

    monkeypatch.setattr(Attention, "forward", broken)
    assert main(["score", str(hybrid), "--second", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {hybrid}: cannot be scored: RuntimeError: shapes cannot be multiplied (8x16 and 32x32)"]
