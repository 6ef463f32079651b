"""On-device latency: timing a module, a disk-backed lookup table of per-block times, and a genome's
latency predicted as the sum of its blocks' table entries.

Every time is tied to a device fingerprint (hardware, torch version, dtype, batch, threads, memory format,
autocast, allocator environment) because a millisecond measured under one setup says nothing about another.
The allocator is in it because on CPU glibc's malloc hands large activations back to the kernel between
calls: the page faults alone can double a small network's time (benchmarks/BENCHMARKS.md, "Latency").
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from blocks import BlockConfig, create
from nas.errors import InputError
from nas.genome import Genome
from nas.graph import build_graph
from nas.io import load_genome

# Above this share of stolen CPU time, a timing says it may read high (benchmarks/timing_drift.py)
STEAL_WARNING = 0.01
Autocast = Literal["bf16", "fp16"]
# What runs the network: PyTorch eager, torch.compile (Inductor), or ONNX Runtime on an exported graph. Operators
# fuse and rank differently under each, so a time is only comparable within one (the fingerprint records it).
Runtime = Literal["eager", "compile", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("eager", "compile", "onnxruntime")
LatencyMode = Literal["measure", "lut", "predict"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Environment variables that change how the CPU allocator behaves, and so the times.
ALLOCATOR_ENV = ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _device(device: str | torch.device) -> torch.device:
    """The torch device, refused early when it cannot run here."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available "
                         f"(torch {torch.__version__}, torch.cuda.is_available() is False); use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {str(device)!r}; use 'cpu' or 'cuda'")
    return dev


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_version(runtime: Runtime) -> str:
    """``runtime`` and the version of what runs it; an ``InputError`` when it cannot run here."""
    if runtime in ("eager", "compile"):
        return f"{runtime} (torch {torch.__version__})"
    if runtime == "onnxruntime":
        try:
            import onnxruntime
        except ImportError:
            raise InputError("--runtime onnxruntime: the onnxruntime package is not installed "
                             "(pip install onnxruntime)") from None
        return f"onnxruntime {onnxruntime.__version__}"
    raise InputError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")


def device_fingerprint(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, batch: int = 1,
                       threads: int | None = None, *, channels_last: bool = False,
                       autocast: Autocast | None = None, runtime: Runtime = "eager") -> dict[str, Any]:
    """Everything a time depends on besides the network; ``threads=None`` records the current count."""
    dev = _device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {"device": dev.type, "name": name, "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
            "batch": batch, "threads": threads if threads is not None else torch.get_num_threads(),
            "channels_last": channels_last, "autocast": autocast,
            "runtime": runtime_version(runtime) + (f" ({', '.join(onnx_providers(dev))})"
                                                   if runtime == "onnxruntime" else ""),
            "allocator": {k: os.environ[k] for k in ALLOCATOR_ENV if k in os.environ}}


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A short key, stable across processes and key order: the device type and a hash of the fingerprint."""
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return f"{fingerprint['device']}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per forward call over ``repeats`` timed calls; std is the population deviation."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    fingerprint: dict[str, Any]
    # Share of the timing's wall time the hypervisor took from the machine's CPUs (``stolen_ms``); None where
    # the system keeps no such count
    steal_share: float | None = None

    def steal_warning(self) -> str:
        """A sentence for the user when the hypervisor took enough CPU during the timing to skew it, else ''."""
        if self.steal_share is None or self.steal_share < STEAL_WARNING:
            return ""
        return (f"the hypervisor took {self.steal_share:.1%} of the CPU time while timing, so this figure may read "
                f"high: on this project's shared VM, windows with 1.3-7.4% steal timed 11-31% slower than windows "
                f"with under 1% (benchmarks/BENCHMARKS.md); time again on a quieter machine")


def stolen_ms() -> float | None:
    """CPU time the hypervisor has taken from this machine's virtual CPUs since boot, all CPUs together, in ms
    (the steal column of ``/proc/stat``); None where there is no such count."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")


def _check_args(batch: int, warmup: int, repeats: int, threads: int | None, autocast: str | None) -> None:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None (keep the current count), got {threads}")
    if autocast is not None and autocast not in _AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")


@contextmanager
def _num_threads(threads: int):
    """Fix torch's intra-op thread count while timing, then put the caller's count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# glibc's defaults once its dynamic mmap threshold has grown to its ceiling (32 MiB on 64-bit), which is where a
# long-running process that freed large blocks ends up; kept_heap restores these.
_GLIBC_MMAP_MAX, _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = 32 * 2**20, -1, -3


@contextmanager
def kept_heap():
    """While timing on CPU, keep freed memory in the heap: glibc otherwise returns large freed blocks to the
    kernel (munmap, or a trim of the heap's top), so every call of a network page-faults its activations in
    afresh. Outside glibc, nothing. Measured not to steady repeat timings on the 2-core VM, where the machine's
    own slow spells dominate, so ``measure_latency`` does not use it (benchmarks/BENCHMARKS.md, "Does keeping
    freed memory in the heap quiet repeat timings?"); ``benchmarks/timing_noise.py`` measures it elsewhere."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 2**31 - 1)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _GLIBC_MMAP_MAX)
        libc.malloc_trim(0)


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def time_calls(call: Callable[[], Any], dev: torch.device, warmup: int, repeats: int,
               cuda_events: bool = True) -> list[float]:
    """Milliseconds of each timed call of ``call`` (``time_interleaved`` with one call)."""
    return time_interleaved([call], dev, warmup, repeats, cuda_events)[0]


def time_interleaved(calls: Sequence[Callable[[], Any]], dev: torch.device, warmup: int, repeats: int,
                     cuda_events: bool = True) -> list[list[float]]:
    """Milliseconds of each timed call, per call: ``warmup`` untimed calls of each, then ``repeats`` rounds that
    time each call once, in turn. Taking turns spreads every call's times over the whole run, so a slow spell of
    the machine (another tenant, a frequency change) lands on all of them alike instead of on one call's whole
    window. On the 2-core VM it did not move a calibration's accuracy measurably: there the drift spans
    minutes, longer than one genome's entries take (benchmarks/BENCHMARKS.md, "The misses are the moment's").
    CUDA: events around each call, synchronised, so a time is one call's latency rather than a
    share of a pipelined queue; CPU (and ONNX Runtime, which returns host arrays, so each call ends
    synchronised): the wall clock."""
    for call in calls:
        for _ in range(warmup):
            call()
    times: list[list[float]] = [[] for _ in calls]
    if dev.type == "cuda" and cuda_events:
        torch.cuda.synchronize(dev)
        for _ in range(repeats):
            for call, out in zip(calls, times):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end))
        return times
    for _ in range(repeats):
        for call, out in zip(calls, times):
            start_s = time.perf_counter()
            call()
            out.append((time.perf_counter() - start_s) * 1e3)
    return times


def _runner(model: nn.Module, x: torch.Tensor, dev: torch.device, runtime: Runtime, threads: int
            ) -> Callable[[], Any]:
    """One forward call of ``model`` on ``x`` under ``runtime``, ready to time (compiled or exported first)."""
    if runtime == "eager":
        return lambda: model(x)
    if runtime == "compile":
        compiled = torch.compile(model)
        return lambda: compiled(x)
    from nas.onnx import module_session

    session = module_session(model, tuple(x.shape), onnx_providers(dev), threads=threads, dynamic_batch=False)
    feed = {session.get_inputs()[0].name: x.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


def onnx_providers(dev: torch.device) -> list[str]:
    """ONNX Runtime's providers for a device: CPU's on a CPU; on CUDA, TensorRT's then CUDA's, those installed."""
    if dev.type != "cuda":
        return ["cpu"]
    import onnxruntime

    available = onnxruntime.get_available_providers()
    chosen = [name for name, provider in (("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider"))
              if provider in available]
    if not chosen:
        raise InputError(f"--runtime onnxruntime on {dev}: onnxruntime {onnxruntime.__version__} has no CUDA provider "
                         f"here (it has {', '.join(available)}); install onnxruntime-gpu")
    return chosen


def measure_latency(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, batch: int = 1, warmup: int = 10, repeats: int = 50,
                    threads: int | None = None, channels_last: bool = False,
                    autocast: Autocast | None = None, runtime: Runtime = "eager") -> LatencyResult:
    """Time ``model`` on random inputs of ``(batch, *input_shape)`` under inference mode.

    ``input_shape`` is one sample in the layout the model takes: (C, H, W) for a compiled network, (H, W, C)
    for a stem, downsample, block or head, which run channels-last. The model is moved to ``device`` and
    ``dtype`` in place (and to channels-last memory format when asked); its train/eval mode is restored.
    ``runtime``: ``compile`` compiles the model first (seconds to minutes, not timed; the first warmup call
    triggers it); ``onnxruntime`` exports it to ONNX and times ONNX Runtime's session (CPU provider, or CUDA's
    when the device is CUDA and the provider is installed).
    """
    return measure_latencies([(model, input_shape)], device, dtype, batch, warmup, repeats, threads, channels_last,
                             autocast, runtime)[0]


def measure_latencies(models: Sequence[tuple[nn.Module, Sequence[int]]], device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, batch: int = 1, warmup: int = 10, repeats: int = 50,
                      threads: int | None = None, channels_last: bool = False,
                      autocast: Autocast | None = None, runtime: Runtime = "eager") -> list[LatencyResult]:
    """``measure_latency`` of several ``(model, input_shape)`` at once, their calls taking turns
    (``time_interleaved``), so their times are comparable with one another: what the latency table does with
    the blocks it has not timed yet."""
    _check_args(batch, warmup, repeats, threads, autocast)
    if runtime != "eager" and (autocast or channels_last or dtype != torch.float32):
        raise ValueError(f"runtime {runtime!r} is timed in float32, contiguous, without autocast")
    dev = _device(device)
    threads = threads if threads is not None else torch.get_num_threads()
    fingerprint = device_fingerprint(dev, dtype, batch, threads, channels_last=channels_last, autocast=autocast,
                                     runtime=runtime)
    if runtime == "compile":
        warmup = max(warmup, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    amp = torch.autocast(dev.type, dtype=_AUTOCAST_DTYPES[autocast]) if autocast else nullcontext()
    was_training = [model.training for model, _ in models]
    try:
        with _num_threads(threads):
            calls = []
            for model, input_shape in models:
                x = torch.randn(batch, *input_shape).to(dev, dtype, memory_format=fmt)
                model.to(dev, dtype, memory_format=fmt)
                model.eval()
                calls.append(_runner(model, x, dev, runtime, threads))  # an ONNX export traces outside inference mode
            steal_before, start_s = stolen_ms(), time.perf_counter()
            with torch.inference_mode(), amp:
                timed = time_interleaved(calls, dev, warmup, repeats, cuda_events=runtime != "onnxruntime")
            wall_ms, steal_after = (time.perf_counter() - start_s) * 1e3, stolen_ms()
    finally:
        for (model, _), training in zip(models, was_training):
            model.train(training)
    steal = None if steal_before is None or steal_after is None else (steal_after - steal_before) / wall_ms
    results = []
    for times in map(np.asarray, timed):
        p10, median, p90 = np.percentile(times, [10, 50, 90])
        results.append(LatencyResult(median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90),
                                     mean_ms=float(times.mean()), std_ms=float(times.std()), repeats=repeats,
                                     fingerprint=fingerprint, steal_share=steal))
    return results


@dataclass(frozen=True)
class LatencyKey:
    """One table entry: a block config (canonical JSON) on a feature map of ``in_shape``, on one device."""

    device: str  # fingerprint_key(...)
    role: str
    config: str
    in_shape: tuple[int, int, int]  # (C, H, W)
    out: int  # output channels (classes for a head)

    @classmethod
    def of(cls, device: str, role: str, cfg: BlockConfig, in_shape: Sequence[int], out: int) -> LatencyKey:
        config = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return cls(device, role, config, tuple(in_shape), out)

    def _row(self) -> tuple[str, str, str, str, int]:
        return self.device, self.role, self.config, "x".join(map(str, self.in_shape)), self.out


class LatencyTable:
    """Median milliseconds per block, in an SQLite file.

    SQLite rather than JSON lines: several search workers share one table, and SQLite's own file locking
    (WAL mode, a busy timeout, one ``INSERT OR REPLACE`` transaction per entry) gives atomic, indexed
    updates with no torn lines and no whole-file rewrite; it ships with Python. Do not put the file on a
    network filesystem, where SQLite's locks are unreliable.
    """

    COLUMNS = ("device", "role", "config", "in_shape", "out", "ms")
    CALIBRATION_COLUMNS = ("device", "data")

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        """Open (or create) the table at ``path``; a file that is not one is an InputError naming it."""
        self.path = Path(path)
        self.timeout_s = timeout_s
        if self.path.is_dir():
            raise self._unusable("a directory, not a file")
        try:
            with self._connect() as db:
                self._check_or_create(db)
        except sqlite3.DatabaseError as err:  # OperationalError included: cannot open, read-only, ...
            reason = "not an SQLite database" if "not a database" in str(err) else f"cannot use it ({err})"
            raise self._unusable(reason) from None

    def _unusable(self, why: str) -> InputError:
        return InputError(f"latency table {self.path}: {why}")

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        """A new or empty file gets the table; another program's database is refused, never written into."""
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if tables and "latency" not in tables:
            raise self._unusable(f"an SQLite database without a latency table (it holds {', '.join(tables[:3])}"
                                 f"{', ...' if len(tables) > 3 else ''})")
        if "latency" in tables:
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(latency)"))
            if columns != self.COLUMNS:
                raise self._unusable(f"its latency table has columns ({', '.join(columns)}), not "
                                     f"({', '.join(self.COLUMNS)})")
        if "calibration" in tables:  # another shape failed each read of it as an internal error (no such column)
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(calibration)"))
            if columns != self.CALIBRATION_COLUMNS:
                raise self._unusable(f"its calibration table has columns ({', '.join(columns)}), not "
                                     f"({', '.join(self.CALIBRATION_COLUMNS)})")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS latency (device TEXT, role TEXT, config TEXT, in_shape TEXT, "
                   "out INTEGER, ms REAL NOT NULL, PRIMARY KEY (device, role, config, in_shape, out))")
        # One calibration per device fingerprint (nas.cost.calibration), beside the entries it corrects
        db.execute("CREATE TABLE IF NOT EXISTS calibration (device TEXT PRIMARY KEY, data TEXT NOT NULL)")

    @contextmanager
    def _connect(self):
        """A connection per operation, so a table object survives fork and is never shared across threads;
        the ``with db`` commits on success."""
        with closing(sqlite3.connect(self.path, timeout=self.timeout_s)) as db, db:
            yield db

    def get(self, key: LatencyKey) -> float | None:
        with self._connect() as db:
            row = db.execute("SELECT ms FROM latency WHERE device=? AND role=? AND config=? AND in_shape=? AND out=?",
                             key._row()).fetchone()
        return None if row is None else row[0]

    def put(self, key: LatencyKey, ms: float) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)", (*key._row(), float(ms)))

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]

    def calibration_text(self, device: str) -> str | None:
        """The stored calibration (JSON) of the fingerprint key ``device``, or None."""
        with self._connect() as db:
            row = db.execute("SELECT data FROM calibration WHERE device=?", (device,)).fetchone()
        return None if row is None else row[0]

    def put_calibration_text(self, device: str, text: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO calibration VALUES (?, ?)", (device, text))

    def calibration_texts(self) -> list[str]:
        with self._connect() as db:
            return [text for (text,) in db.execute("SELECT data FROM calibration ORDER BY device")]


@dataclass(frozen=True)
class Prediction:
    """A genome's latency as the sum of its nodes' table entries.

    ``nodes`` maps graph nodes (``stem``, ``stages[i].downsample``, ``stages[i].blocks[j]``, ``head``) to ms;
    ``stages`` groups them as ``stem``, ``stages[i]`` (downsample included) and ``head``. ``measured`` counts
    the distinct entries timed by this call, ``cached`` the nodes answered without timing.
    """

    total_ms: float
    nodes: dict[str, float]
    stages: dict[str, float]
    measured: int
    cached: int
    device: str  # fingerprint_key of the setup the entries were timed under


def _stage_label(node: str) -> str:
    return node.split(".", 1)[0]


def _build_node(role: str, cfg: BlockConfig, in_shape: Sequence[int], out: int, seed: int) -> nn.Module:
    """One node's module, alone. The context holds what any role's module may take; ``create`` drops the
    rest. drop_path is an identity at inference, so 0 stands in for the network's schedule."""
    chs, h, w = in_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create(role, cfg.model_dump(), dim=chs, in_chs=chs, out_chs=out, num_classes=out, size=(h, w),
                      drop_path=0.0)


def predict_latency(genome: Genome | str | Path | dict[str, Any], table: LatencyTable,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, batch: int = 1,
                    threads: int | None = None, warmup: int = 10, repeats: int = 50, seed: int = 0,
                    runtime: Runtime = "eager") -> Prediction:
    """Sum of per-node medians from ``table``, timing each missing entry once, as a module of its own on a
    channels-last input of its graph ``in_shape``, and storing it. A genome's missing entries are timed
    together, their calls taking turns (``measure_latencies``). Equal nodes (same config, shapes, device) share
    an entry, so a stage of identical blocks is timed once."""
    _check_args(batch, warmup, repeats, threads, None)
    genome = load_genome(genome)
    threads = threads if threads is not None else torch.get_num_threads()
    device_key = fingerprint_key(device_fingerprint(device, dtype, batch, threads, runtime=runtime))
    keys: dict[str, LatencyKey] = {}
    known: dict[LatencyKey, float] = {}
    missing: dict[LatencyKey, tuple[nn.Module, tuple[int, int, int]]] = {}
    for name, data in build_graph(genome).nodes(data=True):
        if data["role"] in ("input", "neck"):  # the classifier's forward, which ``measure`` times, has no neck
            continue
        cfg, out = data["config"], data["out"]
        key = keys[name] = LatencyKey.of(device_key, data["role"], cfg, data["in_shape"], out)
        if key in known or key in missing:
            continue
        ms = table.get(key)
        if ms is not None:
            known[key] = ms
        else:
            chs, h, w = data["in_shape"]
            missing[key] = (_build_node(data["role"], cfg, data["in_shape"], out, seed), (h, w, chs))
    if missing:  # timed together, taking turns, so one slow spell of the machine does not skew one entry
        results = measure_latencies(list(missing.values()), device, dtype, batch, warmup, repeats, threads,
                                    runtime=runtime)
        for key, result in zip(missing, results):
            table.put(key, result.median_ms)
            known[key] = result.median_ms
    nodes = {name: known[key] for name, key in keys.items()}
    measured = len(missing)
    stages: dict[str, float] = {}
    for name, ms in nodes.items():
        stages[_stage_label(name)] = stages.get(_stage_label(name), 0.0) + ms
    return Prediction(total_ms=sum(nodes.values()), nodes=nodes, stages=stages, measured=measured,
                      cached=len(nodes) - measured, device=device_key)
