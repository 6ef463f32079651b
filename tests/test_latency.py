"""On-device latency: real CPU timings of tiny networks (a few repeats each), and the shared lookup table.

No test asserts on speed: the machine is shared. They assert on what a timing must satisfy whatever the load.
"""
from __future__ import annotations

import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nas import compile_model, load_genome
from nas.cost.calibration import genome_latency
from nas.cost.latency import (
    LatencyKey,
    LatencyTable,
    device_fingerprint,
    fingerprint_key,
    measure_latencies,
    measure_latency,
    predict_latency,
    time_interleaved,
)
from nas.errors import InputError
from tests.conftest import ROOT

FAST = {"warmup": 1, "repeats": 3}

# Two stages of two identical blocks each: 1 stem + 1 downsample + 2 distinct blocks + 1 head = 5 entries.
TINY = {
    "name": "tiny",
    "input": {"channels": 3, "resolution": 32},
    "num_classes": 10,
    "stem": {"type": "conv", "kernel": 4, "stride": 4},
    "stages": [
        {"depth": 2, "width": 16, "block": {"mixer": {"type": "sepconv", "kernel": 3}}},
        {"depth": 2, "width": 32, "downsample": {"type": "conv", "kernel": 2, "stride": 2},
         "block": {"mixer": {"type": "attention", "heads": 2}}},
    ],
}


@pytest.fixture(scope="module")
def tiny():
    return load_genome(TINY)


@pytest.fixture
def table(tmp_path: Path) -> LatencyTable:
    return LatencyTable(tmp_path / "latency.sqlite")


def test_a_compiled_network_is_timed_with_sane_statistics(tiny):
    result = measure_latency(compile_model(tiny, seed=0), (3, 32, 32), threads=1, **FAST)
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.mean_ms > 0 and result.std_ms >= 0
    assert result.repeats == 3


def test_a_block_is_timed_on_its_channels_last_input():
    seen = []
    block = nn.Linear(16, 8)
    block.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    measure_latency(block, (4, 4, 16), batch=2, **FAST)
    assert seen == [(2, 4, 4, 16)] * 4  # warmup + repeats calls, each on (batch, H, W, C)


def test_the_fingerprint_records_the_setup():
    fp = device_fingerprint("cpu", torch.bfloat16, batch=4, threads=1)
    assert fp["device"] == "cpu" and fp["name"]
    assert fp["torch"] == torch.__version__
    assert (fp["dtype"], fp["batch"], fp["threads"], fp["channels_last"], fp["autocast"]) == (
        "bfloat16", 4, 1, False, None)
    assert device_fingerprint()["threads"] == torch.get_num_threads()


def test_the_fingerprint_records_allocator_settings(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    plain = device_fingerprint()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4294967296")
    tuned = device_fingerprint()
    assert tuned["allocator"]["MALLOC_TRIM_THRESHOLD_"] == "4294967296"
    assert "MALLOC_TRIM_THRESHOLD_" not in plain["allocator"]
    assert fingerprint_key(plain) != fingerprint_key(tuned)


def test_the_fingerprint_key_is_stable_and_tells_setups_apart():
    fp = device_fingerprint("cpu", threads=1)
    assert fingerprint_key(fp) == fingerprint_key(dict(reversed(fp.items())))
    assert fingerprint_key(fp) != fingerprint_key(device_fingerprint("cpu", threads=2))
    assert fingerprint_key(fp).startswith("cpu-")


def test_the_thread_count_is_fixed_while_timing_and_restored_after():
    before = torch.get_num_threads()
    seen = []
    block = nn.Identity()
    block.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    target = 1 if before != 1 else 2
    result = measure_latency(block, (8,), threads=target, **FAST)
    assert set(seen) == {target}
    assert result.fingerprint["threads"] == target
    assert torch.get_num_threads() == before


def test_the_model_gets_its_training_mode_back():
    model = nn.Dropout(0.5).train()
    measure_latency(model, (8,), **FAST)
    assert model.training


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"batch": 0}, "batch must be >= 1"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"autocast": "int8"}, "autocast must be None, 'bf16' or 'fp16'"),
    ({"device": "mps"}, "unsupported device"),
])
def test_bad_arguments_are_refused_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(nn.Identity(), (8,), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_latency(nn.Identity(), (8,), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        device_fingerprint("cuda:0")


def key(i: int, device: str = "cpu-test") -> LatencyKey:
    return LatencyKey(device, "block", f'{{"type":"fake","i":{i}}}', (16, 8, 8), 16)


def test_the_table_round_trips_through_its_file(tmp_path):
    path = tmp_path / "lut.sqlite"
    table = LatencyTable(path)
    assert table.get(key(1)) is None and len(table) == 0
    table.put(key(1), 1.5)
    table.put(key(2), 2.5)
    table.put(key(1), 1.25)  # a new time replaces the old one
    reopened = LatencyTable(path)
    assert (reopened.get(key(1)), reopened.get(key(2)), len(reopened)) == (1.25, 2.5, 2)
    assert reopened.get(key(1, device="cuda-other")) is None


WRITER = """
import sys, time
from pathlib import Path
from nas.cost.latency import LatencyKey, LatencyTable
path, worker, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
table = LatencyTable(path)
(path.parent / f"ready{worker}").touch()
while not (path.parent / "go").exists():
    time.sleep(0.001)
for i in range(n):
    table.put(LatencyKey("cpu-test", "block", f'{{"worker":{worker},"i":{i}}}', (16, 8, 8), 16), worker + i / n)
"""


def test_two_processes_share_one_table(tmp_path):
    path, n = tmp_path / "shared.sqlite", 150
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n)], cwd=ROOT)
               for w in (0, 1)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{w}").exists() for w in (0, 1)):  # both open, then write together
        assert time.monotonic() < deadline and all(p.poll() is None for p in workers), "a writer did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=60) for p in workers] == [0, 0]
    table = LatencyTable(path)
    assert len(table) == 2 * n
    for w in (0, 1):
        for i in (0, n // 2, n - 1):
            got = table.get(LatencyKey("cpu-test", "block", f'{{"worker":{w},"i":{i}}}', (16, 8, 8), 16))
            assert got == pytest.approx(w + i / n)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_calls_timed_together_take_turns_so_a_slow_spell_falls_on_all_of_them():
    order: list[str] = []
    times = time_interleaved([lambda: order.append("a"), lambda: order.append("b")], torch.device("cpu"),
                             warmup=2, repeats=3)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # each call's warmup, then one call of each per round
    assert [len(t) for t in times] == [3, 3] and all(ms >= 0 for t in times for ms in t)


def test_a_timing_says_when_the_hypervisor_took_enough_cpu_to_skew_it():
    measured = measure_latency(nn.Linear(8, 8), (8,), threads=1, **FAST)
    on_linux = Path("/proc/stat").exists()
    assert (measured.steal_share is not None) == on_linux
    quiet, stolen = (replace(measured, steal_share=share) for share in (0.002, 0.05))
    assert quiet.steal_warning() == "" and replace(measured, steal_share=None).steal_warning() == ""
    assert stolen.steal_warning().startswith("the hypervisor took 5.0% of the CPU time while timing")


def test_several_modules_are_timed_together_each_on_its_own_input():
    wide, narrow = nn.Linear(64, 64), nn.Linear(8, 8).train()
    results = measure_latencies([(wide, (64,)), (narrow, (8,))], threads=1, **FAST)
    assert [r.repeats for r in results] == [3, 3] and all(r.p10_ms <= r.median_ms <= r.p90_ms for r in results)
    assert narrow.training and wide.training  # each module's mode is given back


def test_a_prediction_times_each_distinct_node_once_then_is_cached(tiny, table):
    first = predict_latency(tiny, table, threads=1, **FAST)
    assert list(first.nodes) == ["stem", "stages[0].blocks[0]", "stages[0].blocks[1]", "stages[1].downsample",
                                 "stages[1].blocks[0]", "stages[1].blocks[1]", "head"]
    assert (first.measured, first.cached, len(table)) == (5, 2, 5)
    assert first.nodes["stages[0].blocks[0]"] == first.nodes["stages[0].blocks[1]"]
    assert all(ms > 0 for ms in first.nodes.values())
    second = predict_latency(tiny, table, threads=1, **FAST)
    assert (second.measured, second.cached, len(table)) == (0, 7, 5)
    assert second.nodes == first.nodes


def test_the_stage_breakdown_sums_to_the_total(tiny, table):
    prediction = predict_latency(tiny, table, threads=1, **FAST)
    assert list(prediction.stages) == ["stem", "stages[0]", "stages[1]", "head"]
    assert sum(prediction.stages.values()) == pytest.approx(prediction.total_ms)
    assert prediction.stages["stages[1]"] == pytest.approx(
        sum(ms for node, ms in prediction.nodes.items() if node.startswith("stages[1].")))


def test_entries_are_kept_per_setup(tiny, table):
    one = predict_latency(tiny, table, threads=1, **FAST)
    two = predict_latency(tiny, table, threads=2, **FAST)
    assert one.device != two.device
    assert two.measured == 5 and len(table) == 10


def test_search_modes(tiny, table):
    assert genome_latency(tiny, "measure", threads=1, **FAST) > 0
    lut = genome_latency(TINY, "lut", table, threads=1, **FAST)
    assert lut == predict_latency(tiny, table, threads=1, **FAST).total_ms
    with pytest.raises(InputError, match="no calibration"):  # predict corrects the sum: never uncorrected
        genome_latency(tiny, "predict", table, threads=1, **FAST)
    with pytest.raises(ValueError, match="needs a LatencyTable"):
        genome_latency(tiny, "lut", threads=1, **FAST)
    with pytest.raises(ValueError, match="unknown latency mode 'fast'"):
        genome_latency(tiny, "fast", table)  # type: ignore[arg-type]


def test_each_runtime_has_its_own_fingerprint_so_tables_never_mix_them():
    keys = {runtime: fingerprint_key(device_fingerprint("cpu", threads=1, runtime=runtime))
            for runtime in ("eager", "compile", "onnxruntime")}
    assert len(set(keys.values())) == 3
    fingerprint = device_fingerprint("cpu", threads=1, runtime="onnxruntime")
    assert fingerprint["runtime"].startswith("onnxruntime 1.") and fingerprint["runtime"].endswith("(cpu)")


def test_onnxruntime_times_the_onnx_export_of_a_block_and_the_table_keeps_it_apart(tmp_path: Path):
    table = LatencyTable(tmp_path / "latency.sqlite")
    tiny = load_genome(TINY)
    eager = predict_latency(tiny, table, threads=1, **FAST)
    ort = predict_latency(tiny, table, threads=1, runtime="onnxruntime", **FAST)
    assert ort.measured == eager.measured > 0  # every entry timed again under the other runtime
    assert ort.device != eager.device and len(table) == eager.measured + ort.measured
    model = compile_model(tiny)
    result = measure_latency(model, (3, 32, 32), threads=1, runtime="onnxruntime", **FAST)
    assert result.median_ms > 0 and result.fingerprint["runtime"].startswith("onnxruntime")


KEPT_HEAP_PROBE = """
import os
from pathlib import Path
import torch
from nas.cost.latency import kept_heap

def resident_mib():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def freed_mib():
    x = torch.ones(16 * 2**20)  # 64 MiB: over glibc's mmap threshold
    before = resident_mib()
    del x
    return before - resident_mib()

plain = freed_mib()
with kept_heap():
    freed_mib()  # the first block stays in the heap; the second reuses it
    kept = freed_mib()
print(plain, kept)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="kept_heap acts on glibc's malloc only")
def test_kept_heap_keeps_a_freed_activation_in_the_process_instead_of_returning_it_to_the_kernel():
    # A fresh interpreter: in a long-lived test worker the heap's free top can already hold 64 MiB, and then
    # glibc serves the block from the heap whatever its thresholds say.
    run = subprocess.run([sys.executable, "-c", KEPT_HEAP_PROBE], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    plain, kept = map(float, run.stdout.split())
    assert plain > 60  # unmapped on free
    assert kept < 4  # kept in the heap: the next call page-faults nothing
