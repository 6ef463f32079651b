"""Memory a genome needs, from its analytic shapes: for inference (and the check that refuses to build what would
not fit) and for training (``training_memory_estimate``), and the training batch that fits (``choose_batch``,
behind ``--batch-size auto``).

Below ``nas.cost`` so that the compiler, which ``nas.cost.latency`` uses, can check before it allocates."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import BeforeValidator

from nas.errors import InputError, printable
from nas.flags import Flag
from nas.genome import Genome
from nas.graph import build_graph
from nas.network import Network
from nas.saved_activations import network_saved_tensors

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def peak_memory_estimate(genome: Genome, batch: int = 1, dtype: str = "float32",
                         graph: nx.DiGraph | None = None) -> int:
    """An estimate, in bytes, of inference memory: the weights plus the largest input + output + workspace of
    any one node at ``batch``. It ignores allocator overhead and fragmentation."""
    graph = graph if graph is not None else build_graph(genome)
    params = sum(data["params"] for _, data in graph.nodes(data=True))
    return (params + batch * _largest_node(graph)) * DTYPE_BYTES[dtype]


def _largest_node(graph: nx.DiGraph) -> int:
    """Elements per image of the largest input + output + workspace of any node: inference's peak."""
    peak = 0
    for _, data in graph.nodes(data=True):
        if data["role"] == "input":
            continue
        c, h, w = data["in_shape"]
        o_c, o_h, o_w = data["out_shape"]
        peak = max(peak, c * h * w + o_c * o_h * o_w + data["workspace"])
    return peak


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


def require_host_memory(need: float, what_needs: str, remedy: str = "") -> None:
    """Refuse (bad input) ``need`` bytes of host memory beyond ``MEMORY_SHARE`` of what is available now, in one
    line: "{what_needs} about N GiB; this machine has M GiB available{remedy}". Nothing is refused where the
    available memory is unknown."""
    available = available_memory()
    if available is not None and need > MEMORY_SHARE * available:
        raise InputError(f"{what_needs} about {need / 2**30:.3g} GiB; this machine has {available / 2**30:.3g} GiB "
                         f"available{remedy}")


def require_memory(genome: Genome, batch: int = 0, dtype: str = "float32", device: str = "cpu") -> None:
    """Refuse, before allocating, a genome whose weights (``batch`` 0) or inference at ``batch`` would not fit in
    the host memory available now. GPU memory is left to CUDA's own out-of-memory error, which a search
    records per trial."""
    if device != "cpu":
        return
    what = f"inference at batch {batch}" if batch else "its weights"
    require_host_memory(peak_memory_estimate(genome, batch, dtype), f"{printable(genome.name)}: {what} need")


# Tensors the optimiser keeps per trained parameter: AdamW (what nas trains with) two moments, SGD a momentum.
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1}
# glibc serves allocations below its mmap threshold, which rises to 32 MiB as large blocks are freed, from the
# heap. The heap keeps what a step frees, in pieces the next step's tensors do not always fit whole, so on the
# CPU an activation tensor under that size costs more than its size at the training peak; larger ones are
# mapped and handed back on free. The factor is measured (benchmarks/train_memory.py, issue 17): fitted on 14
# runs of three spaces at batches 4 to 256 (seed 0), where the heap held 1.5-2.2x what the small tensors need,
# and checked on 15 other genomes (benchmarks/BENCHMARKS.md). CUDA's caching allocator is not measured.
HEAP_LIMIT, HEAP_FACTOR = 32 * 2**20, 1.6
_FORWARD_BYTES: dict[str, tuple[int, int] | None] = {}  # forward_bytes per genome hash


def heap_limit() -> int:
    """Tensors smaller than this come from glibc's heap: 32 MiB, or the fixed threshold the process was started
    with (``MALLOC_MMAP_THRESHOLD_``: 65536 maps nearly every tensor, and the heap then holds no activations)."""
    fixed = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
    return int(fixed) if fixed.isdigit() else HEAP_LIMIT


def forward_bytes(genome: Genome) -> tuple[int, int] | None:
    """(bytes at batch 1, bytes per further image) of every tensor a training-mode forward pass of ``genome``
    creates, float32, counted on the meta device: no memory, no arithmetic, 0.05-1.5 s. None where
    a block cannot run there. Cached per genome."""
    key = genome.content_hash()
    if key not in _FORWARD_BYTES:
        _FORWARD_BYTES[key] = _count_forward(genome)
    return _FORWARD_BYTES[key]


def _count_forward(genome: Genome) -> tuple[int, int] | None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode  # the one place nas reads a private torch module
    from torch.utils._pytree import tree_flatten

    class Created(TorchDispatchMode):
        """Sums the storage of every tensor an op returns (a view shares its base's)."""

        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            self.bytes += sum(t.untyped_storage().nbytes() for t in tree_flatten(out)[0]
                              if isinstance(t, torch.Tensor) and t._base is None)
            return out

    counts = []
    try:  # the caller's random stream stays as it was
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = Network(genome.to_dict()).train()  # as compile_model builds it, which imports this module
            for batch in (1, 2):
                with Created() as created:
                    model(torch.empty(batch, genome.input.channels, *genome.input.resolution))
                counts.append(created.bytes)
    except Exception:  # noqa: BLE001 - a block the meta device cannot run: the estimate keeps its other bound
        return None
    return counts[0], counts[1] - counts[0]


@dataclass(frozen=True)
class TrainingMemory:
    """An estimate, in bytes, of what training holds at its peak: the weights, their gradients, the optimiser's
    state, the activations autograd keeps for the backward pass at ``batch``, what the CPU allocator holds
    beyond them, and the validation pass (inference at ``validation_batch``), which runs while the allocator
    still holds the steps' memory."""

    batch: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    allocator: int = 0
    validation: int = 0
    validation_batch: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.allocator
                + self.validation)

    def describe(self) -> str:
        """One line: ``training memory ~2.3 GB (weights 0.1, gradients 0.1, optimiser 0.2, activations 1.4 at
        batch 64 + 0.3 allocator; validation 0.2 at batch 256)``."""
        line = (f"training memory ~{gb(self.total)} GB (weights {gb(self.weights)}, gradients {gb(self.gradients)}, "
                f"optimiser {gb(self.optimizer)}, activations {gb(self.activations)} at batch {self.batch}")
        line += f" + {gb(self.allocator)} allocator" if self.allocator else ""
        line += f"; validation {gb(self.validation)} at batch {self.validation_batch}" if self.validation else ""
        return line + ")"


def gb(n: float) -> str:
    """Bytes as GB with two significant digits: 2.3, 0.12, 14."""
    return f"{n / 1e9:.2g}"


def training_memory_estimate(genome: Genome, batch: int, *, validation_batch: int = 0, device: str = "cpu",
                             optimizer: str = "adamw", dtype: str = "float32", trained_params: int | None = None,
                             graph: nx.DiGraph | None = None) -> TrainingMemory:
    """What training ``genome`` at ``batch`` holds at its peak, from its analytic graph: float32 weights, a
    gradient and the optimiser's state for every trained parameter, the activations autograd keeps
    (``nas.saved_activations``) in ``dtype`` (bfloat16 under autocast), on the CPU the heap's share
    (``HEAP_FACTOR``), and with ``validation_batch`` the validation pass's inference peak. ``trained_params``
    replaces the genome's own trainable parameter count where more weights train together (a supernet's)."""
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZER_STATES)}")
    graph = graph if graph is not None else build_graph(genome)
    nodes = [data for _, data in graph.nodes(data=True) if data["role"] != "input"]
    params = sum(data["params"] for data in nodes)
    trained = trained_params if trained_params is not None else params - sum(data["frozen"] for data in nodes)
    size, weight_size = DTYPE_BYTES[dtype], DTYPE_BYTES["float32"]
    # The neck's weights train with the rest, but the classifier's forward (a search's training) does not run it.
    tensors = [n * batch * size for n in network_saved_tensors([(d["config"], d["in_shape"], d["out"]) for d in
                                                                nodes if d["role"] != "neck"])]
    limit = heap_limit()
    heap = sum(n for n in tensors if n < limit) if str(device).startswith("cpu") else 0
    allocator = round((HEAP_FACTOR - 1) * heap)
    created = forward_bytes(genome) if allocator else None
    # The holes in the heap are what the forward pass frees again (the op outputs autograd does not keep), so its
    # share is also at most those temporaries: a conv-BN network keeps nearly all it makes, where a MetaFormer's
    # norms, MLPs and attention free more than the factor's bound. Found on 30 runs, checked on 15 others
    # (benchmarks/BENCHMARKS.md, "Training memory").
    if created is not None:
        allocator = min(allocator, max(0, (created[0] + created[1] * (batch - 1)) * size // 4 - sum(tensors)))
    return TrainingMemory(batch=batch, weights=max(params, trained) * weight_size, gradients=trained * weight_size,
                          optimizer=OPTIMIZER_STATES[optimizer] * trained * weight_size, activations=sum(tensors),
                          allocator=allocator,
                          validation=validation_batch * _largest_node(graph) * size,
                          validation_batch=validation_batch)


def _batch_size(value: Any) -> Any:
    """``auto`` or a whole number, as the flag's text or a Python value."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text != "auto" and not text.isdigit():
            raise ValueError(f"expected a whole number of images or auto, got {value!r}")
        return text if text == "auto" else int(text)
    return value


# A training batch option: images per step, or ``auto`` (``choose_batch``).
BatchSize = Annotated[int | Literal["auto"], BeforeValidator(_batch_size), Flag(text=True, metavar="N|auto")]
MOST_AUTO_BATCH = 256  # auto goes no further (nor past the data set): a short training would take few steps


def free_memory(device: str) -> int | None:
    """Bytes a training run can take on ``device`` now: CUDA's free memory, or the host's ``MemAvailable``;
    None where that is not known."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return available_memory()


@dataclass(frozen=True)
class BatchChoice:
    batch: int
    memory: TrainingMemory
    free: int | None
    processes: int = 1

    def describe(self) -> str:
        """``batch 64 (auto: 2.3 GB of 18 GB free)``, per process where several share the memory."""
        if self.free is None:
            return f"batch {self.batch} (auto: free memory unknown, the default)"
        each = f" per process, {self.processes} processes," if self.processes > 1 else ""
        return f"batch {self.batch} (auto: {gb(self.memory.total)} GB{each} of {gb(self.free)} GB free)"


def choose_batch(estimate: Callable[[int], TrainingMemory], device: str, *, most: int = MOST_AUTO_BATCH,
                 processes: int = 1, default: int = 64, free: int | None = None) -> BatchChoice:
    """The largest power of two up to ``most`` whose training ``estimate(batch)`` fits in ``MEMORY_SHARE`` of
    the free memory (``free_memory(device)`` unless given) divided among ``processes``; ``default`` (or
    ``most``, if smaller) where free memory is unknown. InputError when not even batch 1 fits."""
    free = free_memory(device) if free is None else free
    candidates = [2**i for i in range(max(most, 1).bit_length())]  # 1, 2, 4, ... <= most
    if free is None:
        batch = min(default, candidates[-1])
        return BatchChoice(batch, estimate(batch), None, processes)
    budget = MEMORY_SHARE * free / max(processes, 1)
    fitting = None
    for batch in candidates:
        memory = estimate(batch)
        if memory.total > budget:
            break
        fitting = BatchChoice(batch, memory, free, processes)
    if fitting is None:
        shared = f", shared by {processes} processes" if processes > 1 else ""
        raise InputError(f"--batch-size auto: training needs ~{gb(estimate(1).total)} GB even at batch 1; "
                         f"{gb(free)} GB is free on {device}{shared}")
    return fitting
