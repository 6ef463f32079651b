"""Genome to torch module."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas.genome import Genome
from nas.io import load_genome
from nas.memory import require_memory
from nas.network import Network


def compile_model(genome: Genome | str | Path | dict[str, Any], *, features_only: bool = False,
                  seed: int | None = None, weights: str | Path | Mapping[str, torch.Tensor] | None = None) -> Network:
    """Build the network a genome describes. Accepts a Genome, a mapping, a YAML path or ``zoo:NAME``;
    anything invalid raises GenomeError before torch sees it, and weights that would not fit in memory an
    InputError. ``seed`` makes initial weights reproducible. ``weights``: a state dict, or a ``.pt`` or
    ``.safetensors`` file of one (``nas zoo weights`` writes them from a timm checkpoint), loaded after every
    key and shape is checked; a ``features_only`` model takes a classifier's weights without its head."""
    genome = load_genome(genome)
    require_memory(genome)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Network(genome.to_dict(), features_only=features_only)
    else:
        model = Network(genome.to_dict(), features_only=features_only)
    if weights is not None:
        from nas.weights import load_weights, read_checkpoint

        state = read_checkpoint(weights) if isinstance(weights, (str, Path)) else dict(weights)
        if features_only:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_weights(model, state, source=str(weights) if isinstance(weights, (str, Path)) else "weights")
    return model
