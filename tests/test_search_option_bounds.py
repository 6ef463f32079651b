"""The bounds of a search's options (``SearchOptions.check``) and of the batch they make: a value past what the
code can take is refused in one line, exit 2, naming the flag, before any work; never an internal error, a
traceback in a thread, or an allocation of terabytes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import nas
from nas.cli import main
from nas.errors import InputError
from nas.evaluate.batch import proxy_batch, proxy_batch_bytes
from nas.flags import SEED_LIMIT
from nas.search import SearchOptions
from nas.search.options import LEAST_HEARTBEAT, MOST_PROXY_BATCH, WORKERS_PER_CORE
from nas.search.scoring import search_inputs
from tests.conftest import run_nas
from tests.test_bad_input import GOOD  # a small valid genome

QUICK = ("--space", "tiny", "--trials", "1", "--second", "flops", "--sampler", "random", "--latency-repeats", "1",
         "--proxy-batch", "4", "--references", "none")
SEARCH, SCORE = ("search", *QUICK, "--out", "{d}/r"), ("score", "{d}/g.yaml")

# argv (after `nas`), and the words the one line must hold
CASES = {
    "search seed of 64 bits": ([*SEARCH, "--seed", str(2**64)], ["--seed", "2**32"]),
    "score seed of 64 bits": ([*SCORE, "--seed", str(2**64)], ["--seed", "2**32"]),
    "seed past the forest's 32 bits": ([*SEARCH, "--seed", str(SEED_LIMIT)], ["--seed"]),
    # every command's --seed has the same bound (nas.flags.check_seed)
    "compile seed of 64 bits": (["compile", "{d}/g.yaml", "-o", "{d}/m.py", "--seed", str(2**64)], ["--seed", "2**32"]),
    "validate seed of 64 bits": (["validate", "tiny", "--seed", str(2**64)], ["--seed", "2**32"]),
    "supernet seed of 64 bits": (["supernet", "train", "--space", "tiny", "--out", "{d}/s", "--seed", str(2**64)],
                                 ["--seed", "2**32"]),
    "score proxy batch of a trillion": ([*SCORE, "--proxy-batch", str(10**12)], ["--proxy-batch", "at most"]),
    "search proxy batch past the bound": ([*SEARCH, "--proxy-batch", str(MOST_PROXY_BATCH + 1)], ["--proxy-batch"]),
    "score resolution of terabytes": ([*SCORE, "--resolution", "65536"], ["--proxy-batch", "65536x65536", "GiB"]),
    "score batch size not a number": ([*SCORE, "--batch-size", "abc"], ["--batch-size:", "'abc'"]),
    "local workers by the hundred thousand": ([*SEARCH, "--workers", "100000"], ["--workers", "per core"]),
    "infinite heartbeat": ([*SEARCH, "--heartbeat", "inf"], ["--heartbeat", "inf"]),
    "heartbeat not a number": ([*SEARCH, "--heartbeat", "nan"], ["--heartbeat", "nan"]),
    "heartbeat of centuries": ([*SEARCH, "--heartbeat", "1e10"], ["--heartbeat", "at most"]),
    "heartbeat every microsecond": ([*SEARCH, "--heartbeat", "1e-6"], ["--heartbeat", "at least 1 second"]),
    "timeout of 400 digits": ([*SEARCH, "--timeout", "9" * 400], ["timeout", "finite", "inf"]),
    "cpus per trial not a number": ([*SEARCH, "--runner", "ray", "--cpus-per-trial", "nan"], ["--cpus-per-trial"]),
    "infinite cpus per trial": ([*SEARCH, "--runner", "ray", "--cpus-per-trial", "inf"], ["--cpus-per-trial"]),
    "gpus per trial not a number": ([*SEARCH, "--runner", "ray", "--gpus-per-trial", "nan"], ["--gpus-per-trial"]),
    "infinite gpus per trial": ([*SEARCH, "--runner", "ray", "--gpus-per-trial", "inf"], ["--gpus-per-trial"]),
}


def _argv(args: list[str], folder: Path) -> list[str]:
    (folder / "g.yaml").write_text(GOOD)
    return [a.format(d=folder) for a in args]


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_an_option_past_its_bound_is_one_line_naming_it_and_exit_2(name: str, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, words = CASES[name]
    argv = _argv(args, tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as stop:  # a flag argparse itself refuses (its type: nas compile --seed)
        code = stop.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(word in lines[0] for word in words), lines[0]
    assert _snapshot(tmp_path) == before, "refused before any work: nothing written"


@pytest.mark.parametrize("name", ["score seed of 64 bits", "score batch size not a number", "infinite heartbeat"])
def test_the_refusals_that_were_internal_errors_in_a_real_process(name: str, tmp_path: Path):
    args, words = CASES[name]
    done = run_nas(*_argv(args, tmp_path), cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "internal error" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and all(word in lines[0] for word in words), done.stderr


def test_score_refuses_the_batch_search_would_give_it_that_cannot_fit(tmp_path: Path, capsys, monkeypatch):
    # 1 GiB available: 8 images at 2048x2048 take ~3 GiB to make, at 32x32 under a megabyte
    monkeypatch.setattr("nas.memory.available_memory", lambda: 2**30)
    code = main(_argv([*SCORE, "--resolution", "2048", "--second", "none"], tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --proxy-batch 8 at 3x2048x2048 input") and "1 GiB" in err, err
    assert main(_argv([*SCORE, "--second", "none"], tmp_path)) == 0, capsys.readouterr().err


def test_the_batch_estimate_covers_the_batch_and_is_refused_past_the_memory_share(monkeypatch):
    space = {"input": {"channels": 3, "resolution": 64}, "num_classes": 10}
    x, _ = proxy_batch(channels=3, resolution=64, num_classes=10, count=8, seed=0)
    need = proxy_batch_bytes(channels=3, resolution=64, count=8)
    assert need >= x.numel() * x.element_size()
    monkeypatch.setattr("nas.memory.available_memory", lambda: need)  # 80% of it is a model's share
    with pytest.raises(InputError, match="--proxy-batch 8 at 3x64x64 input"):
        search_inputs(space, SearchOptions(proxy_batch=8))
    monkeypatch.setattr("nas.memory.available_memory", lambda: 2 * need)
    inputs, _ = search_inputs(space, SearchOptions(proxy_batch=8))
    assert inputs.x.shape == (8, 3, 64, 64)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), -5, 0])
def test_the_python_api_bounds_a_timeout_as_the_flag_does(timeout: float, tmp_path: Path):
    # --timeout cannot be written as inf, nan or below 0: no timeout is None (the flag left out)
    with pytest.raises(InputError, match="^a timeout must be (positive|finite)"):
        nas.search("tiny", out=tmp_path / "r", trials=1, timeout=timeout)
    assert not (tmp_path / "r").exists()


def test_the_bounds_themselves_are_accepted():
    SearchOptions(seed=SEED_LIMIT - 1, proxy_batch=MOST_PROXY_BATCH, heartbeat=86400,
                  workers=WORKERS_PER_CORE * len(os.sched_getaffinity(0))).check()
    for heartbeat in (LEAST_HEARTBEAT, 0):  # 0: no heartbeats at all
        SearchOptions(heartbeat=heartbeat).check()
    assert SearchOptions(timeout=90).timeout == SearchOptions(timeout="90s").timeout == 90.0
    # Ray runs as many trials at once as its cluster's CPUs hold, which may be more than this machine's
    SearchOptions(runner="ray", workers=100_000, cpus_per_trial=0.5, gpus_per_trial=0.25).check()


def test_the_largest_seed_runs_a_cascade_search_to_its_report(tmp_path: Path):
    # The report's surrogate summary seeds a scikit-learn forest with --seed: 32 bits at most
    result = nas.search(space="tiny", second="flops", trials=2, latency_repeats=1, references="none",
                        seed=SEED_LIMIT - 1, out=tmp_path / "run", quiet=True)
    assert result.counts["trials"] == 2 and (tmp_path / "run" / "report.md").exists()
