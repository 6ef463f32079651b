"""Genome to torch module."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nas.genome import Genome
from nas.io import load_genome
from nas.memory import require_memory
from nas.network import Network


def compile_model(genome: Genome | str | Path | dict[str, Any], *, features_only: bool = False,
                  seed: int | None = None) -> Network:
    """Build the network a genome describes. Accepts a Genome, a mapping, a YAML path or ``zoo:NAME``;
    anything invalid raises GenomeError before torch sees it, and weights that would not fit in memory an
    InputError. ``seed`` makes initial weights reproducible."""
    genome = load_genome(genome)
    require_memory(genome)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Network(genome.to_dict(), features_only=features_only)
    return Network(genome.to_dict(), features_only=features_only)
