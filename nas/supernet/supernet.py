"""A supernet by weight entanglement, for any block in the registry with no elastic code per block.

The supernet holds, for every unit of the network (the stem, each stage's downsample and blocks, the head) and
every *family* the space puts there, the largest tensor each parameter takes over the space. A family is the
unit's tree of module classes: two genomes whose block differs only in widths, kernels, heads or ratios share
weights; a different mixer type is a different family with weights of its own (weights that cannot be shared
are not). A genome runs as its own plain network (a *shell*, built once and cached) through
``torch.func.functional_call`` with slices of the largest tensors: leading channels, and the centre of a conv
kernel. So the supernet's output for a genome is, by construction, what the plain network computes with those
slices, and ``extract`` copies the same slices into a standalone network. Gradients reach the shared tensors
through the slices. Depth is elastic because block ``j`` of a stage is the same unit in every genome.
Normalisation buffers (BatchNorm statistics) stay per genome in its shell, to be recalibrated before scoring.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from nas.compiler import compile_model
from nas.errors import NasError
from nas.genome import Genome
from nas.io import load_genome
from nas.network import Network
from nas.space import choices, instantiate, random_picker

_UNIT = re.compile(r"^(stages\.\d+\.(?:blocks\.\d+|downsample)|[^.]+)\.(.+)$")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class SupernetCoverageError(NasError):
    """A genome needs a weight the supernet does not hold (a family or a size it never saw)."""


def _units(model: nn.Module) -> dict[str, str]:
    """Each unit prefix of ``model`` and its family signature (its tree of module classes)."""
    trees: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        match = _UNIT.match(name + ".x") if name else None
        if match is None:
            continue
        unit = match[1]
        inner = name[len(unit):]
        trees.setdefault(unit, []).append(f"{inner}:{type(module).__name__}")
    return {unit: hashlib.sha1("|".join(tree).encode()).hexdigest()[:10] for unit, tree in trees.items()}


def _keys(model: nn.Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each parameter's shared key (unit, family, name inside the unit) and its kernel dims (centre-sliced)."""
    families = _units(model)
    spatial: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _CONV):
            spatial[f"{name}.weight" if name else "weight"] = tuple(range(2, module.weight.dim()))
    out = {}
    for name, _ in model.named_parameters():
        match = _UNIT.match(name)
        unit, inner = match[1], match[2]
        out[name] = (f"{unit}/{families[unit]}/{inner}", spatial.get(name, ()))
    return out


def _region(full: tuple[int, ...], shape: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[slice, ...]:
    index = []
    for dim, (n, big) in enumerate(zip(shape, full)):
        start = (big - n) // 2 if dim in spatial else 0
        index.append(slice(start, start + n))
    return tuple(index)


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


def coverage_genomes(space: dict[str, Any], samples: int = 48, seed: int = 0) -> list[dict[str, Any]]:
    """Genomes that show the supernet every option of the space with every number at its largest and at its
    smallest (heads grow as head_dim shrinks), plus ``samples`` random draws."""
    rng = random.Random(seed)
    genomes = []
    for choice in choices(space):
        options = range(len(choice.options)) if choice.kind == "choice" else [None]
        for index in options:
            forced = {} if index is None else {choice.path: index}
            for largest in (True, False):
                genomes.append(instantiate(space, _extreme_picker(rng, forced, largest)))
    genomes += [instantiate(space, random_picker(rng)) for _ in range(samples)]
    return genomes


class Supernet(nn.Module):
    def __init__(self, shapes: dict[str, tuple[int, ...]], spatial: dict[str, tuple[int, ...]]):
        super().__init__()
        self._names = {key: f"w{i}" for i, key in enumerate(sorted(shapes))}
        self.weights = nn.ParameterDict({self._names[k]: nn.Parameter(torch.zeros(s)) for k, s in shapes.items()})
        self._spatial = spatial
        self._shells: dict[str, tuple[Network, dict[str, tuple[str, tuple[int, ...]]]]] = {}
        self._active: str | None = None

    @classmethod
    def from_space(cls, space: dict[str, Any], samples: int = 48, seed: int = 0) -> Supernet:
        """The largest weights covering ``space``: shapes from every option once and ``samples`` random genomes,
        initial values copied from those genomes' own initialisation (larger ones last)."""
        built = []
        for data in coverage_genomes(space, samples, seed):
            try:
                genome = load_genome(data)
            except NasError:
                continue  # an invalid combination: the search skips it too
            built.append(compile_model(genome, seed=seed))
        if not built:
            raise NasError("no valid genome in the space to build a supernet from")
        shapes: dict[str, tuple[int, ...]] = {}
        spatial: dict[str, tuple[int, ...]] = {}
        pieces = []
        for model in built:
            keys = _keys(model)
            for name, tensor in model.named_parameters():
                key, dims = keys[name]
                old = shapes.get(key, (0,) * tensor.dim())
                shapes[key] = tuple(max(a, b) for a, b in zip(old, tensor.shape))
                spatial[key] = dims
                pieces.append((key, tensor.detach()))
        net = cls(shapes, spatial)
        with torch.no_grad():
            for key, tensor in sorted(pieces, key=lambda kv: kv[1].numel()):
                full = net.weights[net._names[key]]
                full[_region(full.shape, tuple(tensor.shape), spatial[key])] = tensor
        return net

    # ------------------------------------------------------------------------------------------------------
    def _shell(self, genome: Genome) -> tuple[Network, dict[str, tuple[str, tuple[int, ...]]]]:
        digest = genome.content_hash()
        if digest not in self._shells:
            shell = compile_model(genome)
            keys = _keys(shell)
            for name, param in shell.named_parameters():
                key = keys[name][0]
                if key not in self._names:
                    raise SupernetCoverageError(f"{name}: the supernet holds no weights for this block family")
                full = self.weights[self._names[key]].shape
                if any(n > big for n, big in zip(param.shape, full)):
                    raise SupernetCoverageError(f"{name}: needs {tuple(param.shape)}, the supernet holds "
                                                f"{tuple(full)}")
                param.requires_grad_(False)
            self._shells[digest] = (shell, keys)
        return self._shells[digest]

    def sliced(self, genome: Genome | dict[str, Any]) -> dict[str, torch.Tensor]:
        """The genome's parameters as slices (views) of the shared weights."""
        shell, keys = self._shell(load_genome(genome))
        out = {}
        for name, param in shell.named_parameters():
            key, dims = keys[name]
            full = self.weights[self._names[key]]
            out[name] = full[_region(full.shape, tuple(param.shape), dims)]
        return out

    def set_active(self, genome: Genome | dict[str, Any]) -> None:
        genome = load_genome(genome)
        self._shell(genome)
        self._active = genome.content_hash()
        self._active_genome = genome

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._active is None:
            raise NasError("no active genome: call set_active(genome) first")
        shell, _ = self._shells[self._active]
        shell.train(self.training)
        return functional_call(shell, self.sliced(self._active_genome), (x,))

    def extract(self, genome: Genome | dict[str, Any]) -> Network:
        """A plain network for ``genome`` with its slices copied in (and its shell's normalisation buffers)."""
        genome = load_genome(genome)
        shell, _ = self._shell(genome)
        model = compile_model(genome)
        with torch.no_grad():
            state = {name: tensor.detach().clone() for name, tensor in self.sliced(genome).items()}
            saved = set(model.state_dict())  # persistent buffers only (an attention index is rebuilt)
            state.update({name: b.clone() for name, b in shell.named_buffers() if name in saved})
            model.load_state_dict(state)
        return model
