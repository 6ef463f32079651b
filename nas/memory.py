"""Memory a genome needs, from its analytic shapes, and the check that refuses to build what would not fit.

Below ``nas.cost`` so that the compiler, which ``nas.cost.latency`` uses, can check before it allocates."""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from nas.errors import InputError
from nas.genome import Genome
from nas.graph import build_graph
from nas.saved_activations import network_saved_elements

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def peak_memory_estimate(genome: Genome, batch: int = 1, dtype: str = "float32",
                         graph: nx.DiGraph | None = None) -> int:
    """An estimate, in bytes, of inference memory: the weights plus the largest input + output + workspace of
    any one node at ``batch``. It ignores allocator overhead and fragmentation."""
    graph = graph if graph is not None else build_graph(genome)
    size = DTYPE_BYTES[dtype]
    params = sum(data["params"] for _, data in graph.nodes(data=True))
    peak = 0
    for node, data in graph.nodes(data=True):
        if data["role"] == "input":
            continue
        c, h, w = data["in_shape"]
        o_c, o_h, o_w = data["out_shape"]
        peak = max(peak, c * h * w + o_c * o_h * o_w + data["workspace"])
    return (params + batch * peak) * size


# Share of the memory available now that one model may take: the rest is for the data, the allocator and the
# other processes of a search.
MEMORY_SHARE = 0.8


def available_memory() -> int | None:
    """Bytes the OS could give this process now (Linux ``MemAvailable``), None where that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def require_memory(genome: Genome, batch: int = 0, dtype: str = "float32", device: str = "cpu") -> None:
    """Refuse, before allocating, a genome whose weights (``batch`` 0) or inference at ``batch`` would not fit in
    the host memory available now. GPU memory is left to CUDA's own out-of-memory error, which a search
    records per trial."""
    if device != "cpu":
        return
    available = available_memory()
    need = peak_memory_estimate(genome, batch, dtype)
    if available is not None and need > MEMORY_SHARE * available:
        what = f"inference at batch {batch}" if batch else "its weights"
        raise InputError(f"{genome.name}: {what} need about {need / 2**30:.3g} GiB; this machine has "
                         f"{available / 2**30:.3g} GiB available")


# Tensors the optimiser keeps per trained parameter: AdamW (what nas trains with) two moments, SGD a momentum.
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1}


@dataclass(frozen=True)
class TrainingMemory:
    """An estimate, in bytes, of what one training step holds at its peak: the weights, their gradients, the
    optimiser's state and the activations autograd keeps for the backward pass at ``batch``."""

    batch: int
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        """One line: ``training memory ~2.3 GB (weights 0.1, gradients 0.1, optimiser 0.2, activations 1.9 at
        batch 64)``."""
        gb = 1e9
        return (f"training memory ~{self.total / gb:.2g} GB (weights {self.weights / gb:.2g}, gradients "
                f"{self.gradients / gb:.2g}, optimiser {self.optimizer / gb:.2g}, activations "
                f"{self.activations / gb:.2g} at batch {self.batch})")


def training_memory_estimate(genome: Genome, batch: int, *, optimizer: str = "adamw", dtype: str = "float32",
                             trained_params: int | None = None, graph: nx.DiGraph | None = None
                             ) -> TrainingMemory:
    """What training ``genome`` at ``batch`` holds at its peak, from its analytic graph: float32 weights, a
    gradient and the optimiser's state for every trained parameter, and the activations autograd keeps
    (``nas.saved_activations``) in ``dtype`` (bfloat16 under autocast). ``trained_params`` replaces the
    genome's own trainable parameter count where more weights train together (a supernet's shared tensors)."""
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZER_STATES)}")
    graph = graph if graph is not None else build_graph(genome)
    nodes = [data for _, data in graph.nodes(data=True) if data["role"] != "input"]
    params = sum(data["params"] for data in nodes)
    trained = trained_params if trained_params is not None else params - sum(data["frozen"] for data in nodes)
    weights = max(params, trained) * DTYPE_BYTES["float32"]
    per_image = network_saved_elements([(data["config"], data["in_shape"], data["out"]) for data in nodes])
    return TrainingMemory(batch=batch, weights=weights, gradients=trained * DTYPE_BYTES["float32"],
                          optimizer=OPTIMIZER_STATES[optimizer] * trained * DTYPE_BYTES["float32"],
                          activations=batch * per_image * DTYPE_BYTES[dtype])
