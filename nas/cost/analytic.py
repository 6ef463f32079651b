"""Analytic cost from the genome: each block's own formulas over the shape-inferred graph; no model is built."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from nas.genome import Genome
from nas.graph import build_graph
from nas.memory import peak_memory_estimate  # noqa: F401 - part of nas.cost's public surface


@dataclass(frozen=True)
class Cost:
    params: int  # every parameter, frozen ones included: equals the compiled model's count
    frozen_params: int
    flops: int  # multiply-accumulates for one image, counted as fvcore counts them

    @property
    def trainable_params(self) -> int:
        return self.params - self.frozen_params

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.frozen_params + other.frozen_params, self.flops + other.flops)


ZERO = Cost(0, 0, 0)


@dataclass(frozen=True)
class PartCost:
    """One row of a report: the stem, a stage (its downsample and blocks), the head, or a neck's pyramid level
    (``neck.levels[k]``) or its weights shared by every level (``neck.shared``)."""

    name: str
    blocks: int
    out_shape: tuple[int, int, int]
    cost: Cost
    nodes: list[str] = field(default_factory=list)


def _node_cost(data: dict) -> Cost:
    return Cost(data["params"], data["frozen"], data["flops"])


def analytic_cost(genome: Genome, graph: nx.DiGraph | None = None) -> Cost:
    """The genome's params, frozen params and FLOPs; ``graph``, its ``build_graph``, when the caller has it."""
    total = ZERO
    for _, data in (graph if graph is not None else build_graph(genome)).nodes(data=True):
        total = total + _node_cost(data)
    return total


def stage_costs(genome: Genome, graph: nx.DiGraph | None = None) -> list[PartCost]:
    """Stem, each stage, head, then a neck's levels, in order; their costs add up to ``analytic_cost``."""
    graph = graph if graph is not None else build_graph(genome)
    parts: dict[str, PartCost] = {}
    for node in graph.nodes:  # insertion order: forward order, a neck after the head
        data = graph.nodes[node]
        if data["role"] == "input":
            continue
        name = node if data["role"] == "neck" else {"stem": "stem", "head": "head"}.get(data["role"],
                                                                                       f"stages[{data['stage']}]")
        part = parts.get(name)
        blocks = (part.blocks if part else 0) + (data["role"] == "block")
        parts[name] = PartCost(name, blocks, data["out_shape"], (part.cost if part else ZERO) + _node_cost(data),
                               (part.nodes if part else []) + [node])
    return list(parts.values())
