"""One genome scored the way a search scores it: the same inputs, objective, device and latency as a trial.

``nas score``, the reference architectures in a run's report and the search's trials all go through
``TrialWork.evaluate``, so a hand-written hybrid, a published design and a search's winner are compared under
one measure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from nas.cost import analytic_cost
from nas.evaluate.batch import proxy_batch, proxy_batch_bytes
from nas.genome import Genome
from nas.io import parse_genome
from nas.memory import MOST_AUTO_BATCH, TrainingMemory, choose_batch, require_host_memory, training_memory_estimate
from nas.search.options import SearchOptions
from nas.search.trial import Inputs, TrialWork
from nas.space import fit_space_to_data, space_resolution


def search_inputs(space: dict[str, Any], options: SearchOptions) -> tuple[Inputs, dict[str, Any]]:
    """What scoring needs besides the model (the proxy batch, from the data or the structured default, or the
    training set) and the space with the data's classes and channels."""
    if options.objective in ("train", "supernet") or (options.data and options.objective == "proxy"):
        from nas.data import load_data

        limit = options.data_limit if options.objective != "proxy" else max(options.proxy_batch, 16)
        dataset = load_data(options.data, resolution=space_resolution(space), seed=options.seed, limit=limit)
        space = fit_space_to_data(space, dataset)
        if options.objective == "supernet":
            return Inputs(dataset=dataset), space
        # with train, the batch is for the cascade's zero-cost stage
        return Inputs(dataset.train_x[:options.proxy_batch], dataset.train_y[:options.proxy_batch],
                      dataset=dataset if options.objective == "train" else None), space
    channels = int((space.get("input") or {}).get("channels", 3))
    res = space_resolution(space)
    _require_batch_memory(channels, res, options.proxy_batch)
    x, y = proxy_batch(channels, res, int(space.get("num_classes", 1000)), options.proxy_batch, options.seed)
    return Inputs(x, y), space


def _require_batch_memory(channels: int, resolution: int, count: int) -> None:
    """Refuse, before it is made, a proxy batch that would not fit in the share of the host memory available now
    that a model may take (``nas.memory.MEMORY_SHARE``): on any device the batch is made on the host."""
    require_host_memory(proxy_batch_bytes(channels, resolution, count),
                        f"--proxy-batch {count} at {channels}x{resolution}x{resolution} input: making the batch needs",
                        " (lower --proxy-batch or the input resolution)")


def set_up_device(options: SearchOptions) -> str:
    """The device trials run on, with the search's thread count set."""
    from nas.cost.profile import resolve_device

    device_name = resolve_device(options.device)
    if options.runner == "ray" and options.gpus_per_trial > 0 and options.device == "auto":
        device_name = "cuda"  # the trials' device, on the workers Ray gives GPUs to
    # One thread on CPU unless asked: steadier latency ranks, and a CPU shared with other jobs slows two
    # spinning OpenMP threads ~20x (benchmarks/BENCHMARKS.md, "Search")
    threads = options.threads or (1 if device_name == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    return device_name


# A trial of at least this many FLOPs takes seconds on a CPU core, which pays for a worker process's start
# (about 5 s: imports, the run's inputs) within a few trials; below it, one process is faster.
PARALLEL_FROM_FLOPS = 200e6
MOST_DEFAULT_WORKERS = 4  # each holds a model, its gradients and a batch: ~3.5 GB at 224x224 and 4 GFLOPs


def default_workers(options: SearchOptions, device: str, custom: bool, median_flops: int | None) -> int:
    """Local processes when --workers is not given: one per CPU core (at most ``MOST_DEFAULT_WORKERS``) for a
    CPU search whose genomes take seconds a trial, as each process computes on one thread; else one. A custom
    evaluate cannot be sent to another process, and a GPU is one device whichever process uses it."""
    if (options.runner != "local" or device != "cpu" or custom or options.objective == "supernet"
            or (median_flops or 0) < PARALLEL_FROM_FLOPS):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MOST_DEFAULT_WORKERS))


def training_memory(genome: Genome, dataset: Any, device: str, batch: int) -> TrainingMemory:
    """What training ``genome`` as a trial does holds at its peak (``nas.memory``): ``train_model`` at ``batch``
    (no more than the training images, as ``train_model`` takes), then its validation at ``max(256, batch)``
    images a forward."""
    batch = min(batch, len(dataset.train_y))
    return training_memory_estimate(genome, batch, validation_batch=min(max(256, batch), len(dataset.val_y)),
                                    device=device, dtype="bfloat16" if device.startswith("cuda") else "float32")


def training_batch(options: SearchOptions, genome: Genome, dataset: Any, device: str, what: str
                   ) -> tuple[SearchOptions, str]:
    """The options with ``--batch-size auto`` made a number for ``genome`` (``what`` names it in the line),
    and the line that states the training memory and, for auto, the choice. InputError when nothing fits."""
    processes = (options.workers or 1) if options.runner == "local" else 1
    if options.batch_size == "auto":
        choice = choose_batch(lambda batch: training_memory(genome, dataset, device, batch), device,
                              most=min(MOST_AUTO_BATCH, len(dataset.train_y)), processes=processes)
        options, memory = options.model_copy(update={"batch_size": choice.batch}), choice.memory
        chosen = f"; {choice.describe()}"
    else:
        memory, chosen = training_memory(genome, dataset, device, options.batch_size), ""
    each = f" per process ({processes} processes)" if processes > 1 else ""
    return options, f"  {memory.describe()}{each} for {what}{chosen}"


def latency_table(options: SearchOptions) -> Any:
    """The per-block latency table when the search measures latency by lookup, else ``None``."""
    if options.latency_mode == "measure" or not (options.second == "latency" or options.latency):
        return None
    from nas.cost import LatencyTable
    from nas.cost.profile import default_table_path

    default_table_path().parent.mkdir(parents=True, exist_ok=True)
    return LatencyTable(default_table_path())


def require_calibration(table: Any, device: str, threads: int, runtime: str = "eager") -> Any:
    """``--latency-mode predict`` before any trial: the table's calibration for this device, thread count and
    runtime, or an ``InputError`` saying how to make one."""
    from nas.cost import calibration
    from nas.cost.latency import device_fingerprint, fingerprint_key

    key = fingerprint_key(device_fingerprint(device, threads=threads, runtime=runtime))
    return calibration.require_calibration(
        table, key, f"--latency-mode predict on device {device} with {threads} thread(s) under {runtime}",
        f"`nas latency calibrate --device {device} --threads {threads} --runtime {runtime}`")


@dataclass
class GenomeScore:
    """A genome's objective under a search's options, with what it is made of."""

    name: str
    objective: str
    score: float | None  # None when the genome failed
    components: dict[str, float] = field(default_factory=dict)  # the proxy's scores, or accuracy per epoch
    params: int = 0
    flops: int = 0
    latency_ms: float | None = None
    second: str = "none"
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "objective": self.objective, "score": self.score, "components": self.components,
                "params": self.params, "flops": self.flops, "latency_ms": self.latency_ms, "second": self.second,
                "failure": self.failure}


def score_genome(genome: Genome, work: TrialWork) -> GenomeScore:
    """``genome`` evaluated by ``work`` (a search's ``TrialWork``) exactly as a trial would be; a failure (an
    exception in the forward pass, a score that is not finite) is the result's ``failure``."""
    cost = analytic_cost(genome)
    payload = {"genome": genome.to_dict(), "cost": [cost.params, cost.frozen_params, cost.flops],
               "schedule_epochs": work.options.first_schedule_epochs}  # as a first-stage trial trains
    outcome = work.evaluate(payload)
    attrs = outcome.attrs
    components = dict(attrs.get("scores") or {})
    components.update({k: v for k, v in attrs.items() if k.startswith("accuracy_epoch_")})
    return GenomeScore(name=genome.name, objective=work.options.objective,
                       score=outcome.values[0] if outcome.values else None, components=components,
                       params=cost.params, flops=cost.flops, latency_ms=attrs.get("latency_ms"),
                       second=work.options.second, failure=outcome.failure or outcome.pruned)


def fit_genome(genome: Genome, space: dict[str, Any]) -> Genome:
    """``genome`` with the input channels and class count of a (data-fitted) space."""
    raw = genome.to_dict()
    raw["num_classes"] = space.get("num_classes", raw["num_classes"])
    raw["input"] = {**raw["input"], "channels": (space.get("input") or {}).get("channels",
                                                                              raw["input"]["channels"])}
    return parse_genome(raw)
