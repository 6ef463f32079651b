"""Training a supernet and searching on it, as a user runs them: real ``nas`` subprocesses on ``synthetic``."""
from __future__ import annotations

import importlib.util
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import nas.supernet.train as train_module
from nas import compile_model, load_genome
from nas.data import load_data
from nas.errors import InputError
from nas.evaluate.train import evaluate_accuracy
from nas.search.cascade import zero_cost_features
from nas.search.params import genome_data, params_picker
from nas.search.rundir import open_study, read_run
from nas.supernet import (
    Supernet,
    SupernetTrainOptions,
    inherited_accuracy,
    train_supernet,
)
from tests.conftest import run_nas

# Small enough to train in seconds: BatchNorm in the stem (recalibrated per genome), LayerNorm in the blocks,
# conv, attention and pooling mixers, elastic depth, width, kernel and MLP ratio.
MINI_SPACE = """\
name: mini
input: {channels: 3, resolution: 16}
num_classes: 10
stem: {type: conv, kernel: 2, stride: 2, post_norm: batchnorm}
defaults:
  norm: layernorm
  downsample: {type: conv, kernel: 2, stride: 2, pre_norm: layernorm}
stages:
  - depth: {int: [1, 2]}
    width: {choice: [8, 16]}
    block:
      mlp: {type: mlp, ratio: {choice: [2, 4]}}
      mixer: {choice: [{type: dwconv, kernel: {choice: [3, 5]}}, {type: pooling, pool_size: 3}]}
  - depth: {int: [1, 2]}
    width: {choice: [16, 24]}
    block:
      mixer: {choice: [{type: dwconv, kernel: 3}, {type: attention, head_dim: 8}]}
head: {type: linear, norm: layernorm}
"""
TRAIN = ("--data", "synthetic", "--data-limit", "128", "--batch-size", "16", "--random-per-step", "1", "--threads", "1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A supernet trained for 3 epochs without a stop, and the space file."""
    root = tmp_path_factory.mktemp("supernet")
    space = root / "mini.yaml"
    space.write_text(MINI_SPACE)
    proc = run_nas("supernet", "train", "--space", space, *TRAIN, "--epochs", "3", "--out", root / "whole")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 3/3: loss" in proc.stderr
    return root / "whole", space


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "supernet.pt", weights_only=True)["weights"]


def test_training_writes_a_checkpoint_history_and_the_space(trained):
    run, _ = trained
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,largest_accuracy,smallest_accuracy")
    assert len(history) == 4
    state = torch.load(run / "supernet.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (3, 0)
    assert yaml.safe_load((run / "space.yaml").read_text())["num_classes"] == 4  # the data's classes, not 10
    first, last = (dict(zip(history[0].split(","), row.split(","))) for row in (history[1], history[3]))
    assert float(last["loss"]) < float(first["loss"])  # the largest genome learns from the labels


def test_a_run_stopped_by_sigterm_resumes_to_the_same_weights_as_one_never_stopped(trained, tmp_path):
    whole, space = trained
    run = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "nas", "supernet", "train", "--space", str(space), *TRAIN,
                             "--epochs", "3", "--out", str(run)], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # stop it once the first epoch is done, somewhere in the second
        if "epoch 1/3: loss" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "checkpoint saved at epoch" in rest
    state = torch.load(run / "supernet.pt", weights_only=True)
    assert state["epoch"] < 3

    proc = run_nas("supernet", "train", "--resume", run)
    assert proc.returncode == 0, proc.stderr
    assert "resuming at epoch" in proc.stderr
    resumed, never_stopped = _weights(run), _weights(whole)
    assert resumed.keys() == never_stopped.keys()
    assert all(torch.allclose(resumed[k], never_stopped[k], atol=1e-6) for k in resumed)


def test_bad_training_input_is_refused_before_any_work(trained, tmp_path):
    whole, space = trained
    for args, message in [(("--epochs", "0"), "--epochs must be at least 1"),
                          (("--data", "nowhere.npz"), "no such file"),
                          (("--out", whole), "already holds a supernet")]:
        proc = run_nas("supernet", "train", "--space", space, *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = run_nas("supernet", "train", "--resume", tmp_path)
    assert proc.returncode == 2 and "no supernet.pt there" in proc.stderr


def test_a_search_on_the_supernet_writes_a_standalone_winner_with_its_weights(trained, tmp_path):
    whole, _ = trained
    out = tmp_path / "search"
    proc = run_nas("search", "--objective", "supernet", "--supernet", whole, "--trials", "6", "--second", "params",
                   "--finetune-epochs", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "the space of supernet" in proc.stderr and "winner weights:" in proc.stderr
    info = yaml.safe_load((out / "best_weights.yaml").read_text())

    # The winner's score is its validation accuracy with the supernet's weights ...
    net, _ = Supernet.load(whole)
    data = load_data("synthetic", resolution=16, limit=128)
    accuracy, _ = inherited_accuracy(net, out / "best.yaml", data)
    assert accuracy == pytest.approx(info["inherited_accuracy"])
    # ... and best_model.py with best_weights.pt is the fine-tuned winner, with no nas import.
    spec = importlib.util.spec_from_file_location("best_model", out / "best_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model(weights=out / "best_weights.pt")
    assert evaluate_accuracy(model, data) == pytest.approx(info["finetuned_accuracy"])
    assert info["finetune_epochs"] == 1


def test_supernet_flags_that_contradict_are_refused():
    proc = run_nas("search", "--objective", "supernet", "--trials", "2")
    assert proc.returncode == 2 and "--objective supernet needs --supernet" in proc.stderr
    proc = run_nas("search", "--supernet", "runs/x", "--trials", "2")
    assert proc.returncode == 2 and "add --objective supernet" in proc.stderr


def _not_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not supernet checkpoints, and the reason the error must give."""
    plain = tmp_path / "plain.pt"  # what nas compile --weights writes
    torch.save(compile_model(load_genome("zoo:randformer_s12")).state_dict(), plain)
    files = {"random bytes": (tmp_path / "random.pt", "not a file written by torch.save"),
             "truncated": (tmp_path / "truncated.pt", "a truncated or damaged torch file"),
             "empty": (tmp_path / "empty.pt", "an empty file"),
             "plain state dict": (plain, "a plain state dict, with no supernet header"),
             "pickled module": (tmp_path / "module.pt", "it holds Python objects besides tensors"),
             "damaged header": (tmp_path / "header.pt", "a damaged supernet header"),
             "weights not the header's": (tmp_path / "weights.pt", "its weights do not match its header")}
    files["random bytes"][0].write_bytes(random.Random(0).randbytes(4096))
    files["truncated"][0].write_bytes(plain.read_bytes()[:5000])
    files["empty"][0].write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), files["pickled module"][0])
    torch.save({"supernet": {"format": 1}, "weights": {}}, files["damaged header"][0])
    torch.save({"supernet": TINY_HEADER, "weights": {"weights.w0": torch.zeros(3)}},
               files["weights not the header's"][0])
    return files


# The header of a supernet with one shared tensor of shape (2,).
TINY_HEADER = {"format": 1, "shapes": {"stem/x/weight/Conv": [2]}, "layouts": {"stem/x/weight/Conv": [1, []]},
               "space": {}, "largest": {}, "smallest": {}}
NEVER_SAY = ("weights_only", "unpickl", "will likely succeed", "Traceback", "internal error")


def test_a_file_that_is_not_a_supernet_checkpoint_is_named_with_the_reason(tmp_path):
    for path, reason in _not_checkpoints(tmp_path).values():
        with pytest.raises(InputError) as info:
            Supernet.load(path)
        assert str(info.value).startswith(f"{path}: not a supernet checkpoint ({reason}")


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "plain state dict"])
def test_search_and_resume_refuse_a_bad_checkpoint_in_one_line(kind, tmp_path):
    path, reason = _not_checkpoints(tmp_path)[kind]
    run = tmp_path / "run"
    run.mkdir()
    (run / "supernet.pt").write_bytes(path.read_bytes())
    for args, named in [(("search", "--objective", "supernet", "--supernet", path, "--trials", "1", "--out",
                          tmp_path / "search"), path),
                        (("search", "--objective", "supernet", "--supernet", path, "--space", "tiny", "--data",
                          "synthetic", "--trials", "1", "--out", tmp_path / "search"), path),
                        (("supernet", "train", "--resume", run), run / "supernet.pt")]:
        proc = run_nas(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [f"error: {named}: not a supernet checkpoint ({reason})"]
        assert not any(word in proc.stderr for word in NEVER_SAY)
    assert not (tmp_path / "search").exists()


def test_a_supernet_checkpoint_without_training_state_cannot_be_resumed(tmp_path):
    torch.save({"supernet": TINY_HEADER, "weights": {"weights.w0": torch.zeros(2)}}, tmp_path / "supernet.pt")
    net, _ = Supernet.load(tmp_path)  # a supernet: it could be searched
    assert sum(p.numel() for p in net.parameters()) == 2
    proc = run_nas("supernet", "train", "--resume", tmp_path)
    assert proc.returncode == 2 and "without training state" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--lr", "nan", "--lr must be a finite positive number, got nan"),
    ("--lr", "inf", "--lr must be a finite positive number, got inf"),
    ("--lr", "-1", "--lr must be a finite positive number, got -1.0"),
    ("--epochs", "0", "--epochs must be at least 1, got 0"),
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--random-per-step", "-1", "--random-per-step must not be negative, got -1"),
    ("--threads", "0", "--threads must be at least 1, got 0")])
def test_bad_training_options_are_refused_before_a_run_directory_is_made(flag, value, message, tmp_path):
    proc = run_nas("supernet", "train", "--space", "tiny", f"{flag}={value}", "--out", tmp_path / "new" / "run")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {message}"]
    assert not (tmp_path / "new").exists()


def test_options_cannot_change_on_resume(tmp_path):
    proc = run_nas("supernet", "train", "--resume", tmp_path, "--lr", "0.1")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line == "error: --lr: a resumed run keeps the options it was started with; only --epochs may change"


def test_a_run_that_fails_before_its_first_checkpoint_leaves_only_what_was_there(tmp_path, monkeypatch):
    def fail(self, *args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train_module._Trainer, "fit", fail)
    space = tmp_path / "mini.yaml"
    space.write_text(MINI_SPACE)
    options = SupernetTrainOptions(space=str(space), data="synthetic", data_limit=32, coverage_samples=0, threads=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_supernet(options, out=tmp_path / "new" / "run", quiet=True)
    assert not (tmp_path / "new").exists()  # both folders were this command's

    mine = tmp_path / "mine"  # a folder of the user's, with a file in it
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError, match="out of memory"):
        train_supernet(options, out=mine, quiet=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_distillation_waits_until_the_largest_genome_beats_chance(tmp_path, monkeypatch):
    """The smaller genomes copy the largest's predictions only after an epoch at whose end it is a quarter of the
    way from chance to 1 (10 classes: 32.5%; 2 classes: 62.5%); the first epoch trains every genome on labels."""
    ready = train_module.teacher_ready
    assert not ready([], 10)
    assert not ready([{"largest_accuracy": 0.12}, {"largest_accuracy": 0.32}], 10)
    assert ready([{"largest_accuracy": 0.33}, {"largest_accuracy": 0.2}], 10)
    assert not ready([{"largest_accuracy": 0.6}], 2) and ready([{"largest_accuracy": 0.63}], 2)

    distilled = []
    kl_div = train_module.F.kl_div
    monkeypatch.setattr(train_module.F, "kl_div", lambda *a, **k: distilled.append(1) or kl_div(*a, **k))
    space = tmp_path / "mini.yaml"
    space.write_text(MINI_SPACE)
    result = train_supernet(SupernetTrainOptions(space=str(space), data="synthetic", data_limit=64, batch_size=16,
                                                 random_per_step=1, epochs=1, threads=1, device="cpu"),
                            out=tmp_path / "run", quiet=True)
    assert len(result.history) == 1 and not distilled


def test_a_training_search_reads_the_supernets_inherited_accuracy_as_a_feature(trained, tmp_path):
    """``--objective train --supernet RUN``: the zero-cost stage also scores each genome with the supernet's
    weights, and the training surrogate reads that inherited accuracy beside the zero-cost scores."""
    whole, _ = trained
    out = tmp_path / "search"
    proc = run_nas("search", "--objective", "train", "--supernet", whole, "--epochs", "1", "--long-epochs", "0",
                   "--trials", "8", "--shortlist", "3", "--pruner", "none", "--references", "none", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "the space of supernet" in proc.stderr  # its space and data, as for --objective supernet
    options, space = read_run(out)
    trials = open_study(out, options).get_trials(deepcopy=False)
    scoring = [t for t in trials if t.user_attrs.get("stage") == "zero-cost" and t.values]
    assert scoring and all(0 <= t.user_attrs["scores"]["inherited"] <= 1 for t in scoring)
    names, scored = zero_cost_features(trials)
    assert names[-1] == "inherited" and len(scored) == len(scoring)
    net, _ = Supernet.load(whole)  # the figure is the genome's accuracy with the supernet's weights
    data = load_data("synthetic", resolution=16, limit=128)
    first = scoring[0]
    genome = genome_data(space, params_picker(first.params))
    assert inherited_accuracy(net, genome, data)[0] == pytest.approx(first.user_attrs["scores"]["inherited"])
    assert "zero-cost scores and inherited accuracy with the supernet" in (out / "report.md").read_text()
    refused = run_nas("search", "--objective", "train", "--supernet", whole, "--shortlist", "0", "--trials", "1")
    assert refused.returncode == 2 and "read by the cascade's zero-cost stage" in refused.stderr
