"""A supernet by weight entanglement, for any block in the registry with no elastic code per block.

The supernet holds one tensor per *shared key*: the unit of the network a parameter lives in (the stem, each
stage's downsample and blocks, the head), the unit's *family* (the classes of its parts that hold weights), the
parameter's name inside the unit, and the classes of the modules on the way to it. Two genomes whose block
differs only in widths, kernels, heads, ratios or activations read the same tensors (leading channels, centre
of a conv kernel); a block with another mixer type is another family with weights of its own, norms and MLP
included, since weights that serve different features are not shared.
A genome runs as its own plain network (a *shell*, built once and cached) through
``torch.func.functional_call`` with slices of the largest tensors. So the supernet's output for a genome is, by
construction, what the plain network computes with those slices, and ``extract`` copies the same slices into a
standalone network. Gradients reach the shared tensors through the slices. Depth is elastic because block ``j``
of a stage is the same unit in every genome. BatchNorm statistics stay per genome in its shell and are
recalibrated (``recalibrate_norms``) before a genome is scored.
"""
from __future__ import annotations

import functools
import random
import re
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from blocks.base import FUSED_PROJECTIONS
from nas.compiler import compile_model
from nas.cost import analytic_cost
from nas.errors import InputError, NasError
from nas.genome import Genome
from nas.io import load_genome
from nas.network import Network
from nas.space import choices, instantiate, random_picker

_UNIT = re.compile(r"^(stages\.\d+\.(?:blocks\.\d+|downsample)|[^.]+)\.(.+)$")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CHECKPOINT, CHECKPOINT_FORMAT = "supernet.pt", 1
SHELL_CACHE = 128  # plain networks kept built; a search scores thousands of genomes


class SupernetCoverageError(NasError):
    """A genome needs a weight the supernet does not hold (a block type or a size it never saw)."""


class Layout(NamedTuple):
    """How a smaller tensor sits in its shared tensor: leading entries, except the centre of ``centred`` dims
    (conv kernels), and dim 0 taken as ``chunks`` equal parts (fused q, k, v) each sliced on its own."""

    chunks: int = 1
    centred: tuple[int, ...] = ()


Slots = dict[str, tuple[str, Layout, tuple[int, ...]]]  # per parameter of a genome: shared key, layout, shape


def _keys(model: nn.Module) -> dict[str, tuple[str, Layout]]:
    """Each parameter's shared key and its layout."""
    classes = {name: type(module).__name__ for name, module in model.named_modules()}
    centred: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _CONV):
            centred[f"{name}.weight" if name else "weight"] = tuple(range(2, module.weight.dim()))
    out, families = {}, {}
    for name, _ in model.named_parameters():
        match = _UNIT.match(name)
        if match is None:
            raise NasError(f"{name}: a parameter outside any stem, stage or head")
        unit, inner = match[1], match[2]
        if unit not in families:
            parts_with_weights = sorted({f"{p.split('.')[0]}:{classes[unit + '.' + p.split('.')[0]]}"
                                         for p, _ in model.get_submodule(unit).named_parameters() if "." in p})
            families[unit] = "+".join([classes[unit], *parts_with_weights])
        parts = inner.split(".")[:-1]
        chain = [classes[unit]] + [classes[".".join([unit, *parts[:i + 1]])] for i in range(len(parts))]
        chunks = FUSED_PROJECTIONS.get(parts[-1], 1) if parts else 1
        out[name] = (f"{unit}/{families[unit]}/{inner}/{'.'.join(chain)}", Layout(chunks, centred.get(name, ())))
    return out


def _regions(full: tuple[int, ...], shape: tuple[int, ...], layout: Layout) -> list[tuple[slice, ...]]:
    """Where each chunk of a ``shape`` tensor lies in the ``full`` one."""
    index = []
    for dim, (n, big) in enumerate(zip(shape, full)):
        start = (big - n) // 2 if dim in layout.centred else 0
        index.append(slice(start, start + n))
    if layout.chunks == 1:
        return [tuple(index)]
    part, big_part = shape[0] // layout.chunks, full[0] // layout.chunks
    return [(slice(c * big_part, c * big_part + part), *index[1:]) for c in range(layout.chunks)]


def _take(full: torch.Tensor, shape: tuple[int, ...], layout: Layout) -> torch.Tensor:
    """The ``shape`` slice of a shared tensor: a view, or for fused tensors the chunks joined (gradients flow)."""
    parts = [full[r] for r in _regions(tuple(full.shape), shape, layout)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _put(full: torch.Tensor, tensor: torch.Tensor, layout: Layout) -> None:
    regions = _regions(tuple(full.shape), tuple(tensor.shape), layout)
    pieces = tensor.chunk(len(regions)) if tensor.dim() else (tensor,)  # a 0-dim tensor is one piece
    for region, piece in zip(regions, pieces):
        full[region] = piece


def _extreme_picker(rng: random.Random, forced: dict[str, int], largest: bool) -> Any:
    """Numbers at their largest (or smallest) value, other options at random unless forced."""
    inner = random_picker(rng, forced)

    def pick(choice: Any) -> Any:
        if choice.path in forced:
            return inner(choice)
        if choice.kind in ("int", "float"):
            return choice.high if largest else choice.low
        if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in choice.options):
            return max(choice.options) if largest else min(choice.options)
        return inner(choice)

    return pick


def _with_ancestors(path: str, index: int | None) -> dict[str, int]:
    """Force a choice and every option it is nested in, so that it is actually reached."""
    forced = {} if index is None else {path: index}
    for match in re.finditer(r"\.choice\[(\d+)\]", path):
        forced[path[:match.start()]] = int(match[1])
    return forced


def coverage_genomes(space: dict[str, Any], samples: int = 48, seed: int = 0) -> list[dict[str, Any]]:
    """Genomes that show the supernet every option of every choice (with the options it is nested in) with the
    numbers at their largest and at their smallest, then ``samples`` random draws. Both ends matter: a
    larger number can give a smaller tensor (heads grow as head_dim shrinks; a gnconv of higher order starts
    narrower)."""
    rng = random.Random(seed)
    genomes = []
    for choice in choices(space):
        options = range(len(choice.options)) if choice.kind == "choice" else [None]
        for index in options:
            forced = _with_ancestors(choice.path, index)
            for largest in (True, False):
                genomes.append(instantiate(space, _extreme_picker(rng, forced, largest)))
    genomes += [instantiate(space, random_picker(rng)) for _ in range(samples)]
    return genomes


def recalibrate_norms(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as a plain average over ``batches``
    (train-mode forwards, no gradients): shared weights serve many genomes, so no genome's statistics are
    right until measured for it. Returns the number of BatchNorm layers (0: nothing to do, no forward run)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)


class Supernet(nn.Module):
    """The shared weights of a space (``from_space``, ``load``) and any genome of it run on them."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], layouts: dict[str, Layout],
                 space: dict[str, Any], largest: dict[str, Any], smallest: dict[str, Any]):
        super().__init__()
        self._names = {key: f"w{i}" for i, key in enumerate(sorted(shapes))}
        self.weights = nn.ParameterDict({self._names[k]: nn.Parameter(torch.zeros(s)) for k, s in shapes.items()})
        self._shapes, self._layouts = dict(shapes), dict(layouts)
        self.space, self.largest, self.smallest = space, largest, smallest
        self._shells: OrderedDict[str, tuple[Network, Slots]] = OrderedDict()
        self._active: Genome | None = None

    @classmethod
    def from_space(cls, space: dict[str, Any], samples: int = 48, seed: int = 0) -> Supernet:
        """The largest weights covering ``space`` (``coverage_genomes``). Shapes come from building every
        coverage genome on the meta device; initial values are copied from real builds of the genomes that
        hold each tensor's largest extents (larger ones last). The sandwich rule's largest and smallest
        genomes are the coverage genomes of most and fewest FLOPs."""
        genomes, tensors = [], []
        for data in coverage_genomes(space, samples, seed):
            try:
                genome = load_genome(data)
            except NasError:
                continue  # an invalid combination: the search skips it too
            with torch.device("meta"):
                model = compile_model(genome)
            genomes.append(genome)
            tensors.append({key: (tuple(p.shape), layout) for (key, layout), p in
                            zip(_keys(model).values(), model.parameters())})
        if not genomes:
            raise NasError("no valid genome in the space to build a supernet from")
        shapes: dict[str, tuple[int, ...]] = {}
        layouts: dict[str, Layout] = {}
        for found in tensors:
            for key, (shape, layout) in found.items():
                old = shapes.setdefault(key, shape)
                if len(old) != len(shape):
                    raise NasError(f"{key}: one shared key with tensors of {len(old)} and {len(shape)} dims")
                shapes[key], layouts[key] = tuple(max(a, b) for a, b in zip(old, shape)), layout
        flops = [analytic_cost(genome).flops for genome in genomes]
        largest = genomes[max(range(len(genomes)), key=flops.__getitem__)]
        smallest = genomes[min(range(len(genomes)), key=flops.__getitem__)]
        net = cls(shapes, layouts, space, _plain(largest), _plain(smallest))
        donors = _donors(shapes, tensors)
        last = []  # each tensor's largest piece goes in after the others
        with torch.no_grad():
            for i in sorted({i for found in donors.values() for i in found}):
                model = compile_model(genomes[i], seed=seed)
                for (key, _), tensor in zip(_keys(model).values(), model.parameters()):
                    if i not in donors[key]:
                        continue
                    full = net.weights[net._names[key]]
                    if i == donors[key][0]:
                        last.append((full, tensor.detach(), layouts[key]))
                    else:
                        _put(full, tensor, layouts[key])
            for full, tensor, layout in last:
                _put(full, tensor, layout)
        return net

    # ------------------------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What rebuilds this supernet's structure: shapes, layouts, space, sandwich ends."""
        return {"format": CHECKPOINT_FORMAT, "shapes": self._shapes,
                "layouts": {k: [v.chunks, list(v.centred)] for k, v in self._layouts.items()},
                "space": self.space, "largest": self.largest, "smallest": self.smallest}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Supernet:
        """The supernet's structure, zero weights (``header()`` of a supernet; ``read_checkpoint`` checks it)."""
        shapes = {k: tuple(v) for k, v in header["shapes"].items()}
        layouts = {k: Layout(chunks, tuple(centred)) for k, (chunks, centred) in header["layouts"].items()}
        return cls(shapes, layouts, header["space"], header["largest"], header["smallest"])

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Supernet, dict[str, Any]]:
        """A supernet saved by ``nas supernet train`` and the rest of its checkpoint (training state, data);
        any other file is an InputError saying what it is instead (``read_checkpoint``)."""
        path = checkpoint_path(path)
        state = read_checkpoint(path, map_location)
        net = cls.from_header(state["supernet"])
        net.load_state_dict(state["weights"])  # read_checkpoint matched its keys and shapes to the header
        return net, state

    # ------------------------------------------------------------------------------------------------------
    def _shell(self, genome: Genome) -> tuple[Network, Slots]:
        """The genome's plain network (its buffers only) and, per parameter, its shared key, layout and shape."""
        digest = genome.content_hash()
        if digest in self._shells:
            self._shells.move_to_end(digest)
            return self._shells[digest]
        shell = compile_model(genome)
        slots = self._slots(shell)
        for param in shell.parameters():
            param.requires_grad_(False)
            param.data = torch.empty(0)  # never read (functional_call passes the slices): keep only buffers
        shell.to(self._device)
        self._shells[digest] = (shell, slots)
        while len(self._shells) > SHELL_CACHE:
            self._shells.popitem(last=False)
        return shell, slots

    def _slots(self, model: Network) -> Slots:
        """Where each parameter of a genome's network comes from; SupernetCoverageError if it is not held."""
        slots: Slots = {}
        keys = _keys(model)
        for name, param in model.named_parameters():
            key, layout = keys[name]
            if key not in self._names:
                raise SupernetCoverageError(f"{name}: the supernet holds no weights for this block")
            full = self._shapes[key]
            if len(full) != param.dim() or any(n > big for n, big in zip(param.shape, full)):
                raise SupernetCoverageError(f"{name}: needs {tuple(param.shape)}, the supernet holds {tuple(full)}")
            slots[name] = (key, layout, tuple(param.shape))
        return slots

    def _take_all(self, slots: Slots) -> dict[str, torch.Tensor]:
        return {name: _take(self.weights[self._names[key]], shape, layout)
                for name, (key, layout, shape) in slots.items()}

    @property
    def _device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    def sliced(self, genome: Genome | dict[str, Any]) -> dict[str, torch.Tensor]:
        """The genome's parameters as slices (views) of the shared weights."""
        return self._take_all(self._shell(load_genome(genome))[1])

    def set_active(self, genome: Genome | dict[str, Any]) -> None:
        genome = load_genome(genome)
        self._shell(genome)
        self._active = genome

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._active is None:
            raise NasError("no active genome: call set_active(genome) first")
        shell, slots = self._shell(self._active)
        shell.train(self.training)
        return functional_call(shell, self._take_all(slots), (x,))

    def extract(self, genome: Genome | dict[str, Any]) -> Network:
        """A plain network for ``genome`` with its slices copied in. Its buffers are those the supernet ran it
        with (BatchNorm statistics), or a fresh build's when it never ran: the same a new shell would hold."""
        genome = load_genome(genome)
        model = compile_model(genome)
        weights = self._take_all(self._slots(model))
        cached = self._shells.get(genome.content_hash())
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(weights[name])
            if cached is not None:
                buffers = dict(cached[0].named_buffers())
                for name, buffer in model.named_buffers():
                    buffer.copy_(buffers[name])
        return model.to(self._device)

    def _apply(self, fn, recurse=True):  # .to(device) moves the cached shells' buffers with the weights
        super()._apply(fn, recurse)
        for shell, _ in self._shells.values():
            shell._apply(fn, recurse)
        return self


def checkpoint_path(path: str | Path) -> Path:
    """A supernet run directory's checkpoint, or the checkpoint file named."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
                    ) -> dict[str, Any]:
    """The contents of a supernet checkpoint (``RUN/supernet.pt`` or the run directory), checked to be one:
    a header ``from_header`` can build and weights of the header's names and shapes. Anything else is an
    InputError, ``PATH: not a supernet checkpoint (why)``. Loading is ``weights_only``: a file holding other
    Python objects is refused, never unpickled. ``mmap`` checks a large file without reading its weights."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such supernet checkpoint (nas supernet train writes RUN/{CHECKPOINT})")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any failure to decode untrusted bytes means "not a checkpoint"
        raise _not_a_checkpoint(path, _unloadable(head, err)) from None
    _check_contents(path, state)
    return state


def _not_a_checkpoint(path: Path, why: str) -> InputError:
    return InputError(f"{path}: not a supernet checkpoint ({why})")


def _unloadable(head: bytes, err: Exception) -> str:
    """Why torch.load refused a file starting with ``head``, in a few words (torch's own text suggests
    unpickling it: never)."""
    if not head:
        return "an empty file"
    if "Unsupported global" in str(err):
        return "it holds Python objects besides tensors and plain data, so it was not loaded"
    if head.startswith(b"PK"):  # torch.save's zip format
        return "a truncated or damaged torch file"
    return "not a file written by torch.save"


def _check_contents(path: Path, state: Any) -> None:
    """A loaded file is a supernet checkpoint: a header of the current format, weights to match it."""
    if not isinstance(state, dict):
        raise _not_a_checkpoint(path, f"it holds a {type(state).__name__}, not a checkpoint's mapping")
    if "supernet" not in state or "weights" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise _not_a_checkpoint(path, "a plain state dict, with no supernet header")
        raise _not_a_checkpoint(path, "no supernet header and weights")
    header, weights = state["supernet"], state["weights"]
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise _not_a_checkpoint(path, f"header format {found!r}, expected {CHECKPOINT_FORMAT}")
    try:
        shapes = {key: tuple(int(n) for n in shape) for key, shape in header["shapes"].items()}
        layouts = [Layout(int(chunks), tuple(int(d) for d in centred)) for chunks, centred in
                   header["layouts"].values()]
        expected = {f"weights.w{i}": shapes[key] for i, key in enumerate(sorted(shapes))}  # Supernet's names
        whole = (len(layouts) == len(shapes) and set(header["layouts"]) == set(shapes)
                 and all(isinstance(header[k], dict) for k in ("space", "largest", "smallest")))
    except (KeyError, TypeError, ValueError, AttributeError):
        whole = False
    if not whole:
        raise _not_a_checkpoint(path, "a damaged supernet header")
    found = ({k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
             if isinstance(weights, dict) else None)
    if found != expected:
        raise _not_a_checkpoint(path, "its weights do not match its header")


def cached_supernet(path: str | Path) -> Supernet:
    """The supernet at ``path``, loaded once per process (per file version) for the trials that score on it."""
    path = checkpoint_path(path)
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    return _load_once(str(path.resolve()), stamp)


@functools.lru_cache(maxsize=2)
def _load_once(path: str, stamp: int) -> Supernet:
    net, _ = Supernet.load(path)
    return net.eval()


def _donors(shapes: dict[str, tuple[int, ...]], tensors: list[dict[str, Any]]) -> dict[str, list[int]]:
    """For each shared tensor, genomes whose pieces reach all its extents between them, the largest piece
    first. Genomes already picked for other tensors are preferred: each one picked is a real build."""
    picked: set[int] = set()
    donors: dict[str, list[int]] = {}
    for key, full in shapes.items():
        size = {i: torch.Size(found[key][0]).numel() for i, found in enumerate(tensors) if key in found}
        holders = sorted(size, key=lambda i: (i not in picked, -size[i]))
        need = set(range(len(full)))
        for i in holders:
            reached = {d for d in need if tensors[i][key][0][d] == full[d]}
            if reached or not full:  # a 0-dim tensor (GLMix's temperature) has no extent to reach
                donors.setdefault(key, []).append(i)
                need -= reached
            if not need:
                break
        donors[key].sort(key=lambda i: -size[i])
        picked.update(donors[key])
    return donors


def _plain(genome: Genome) -> dict[str, Any]:
    return genome.model_dump(mode="json", exclude_none=True)
