"""Analytic cost of a genome, from each block's own formulas: no model is built."""
from __future__ import annotations

from dataclasses import dataclass

from nas.genome import Genome
from nas.graph import build_graph


@dataclass(frozen=True)
class Cost:
    params: int  # every parameter, frozen ones included: equals the compiled model's count
    frozen_params: int
    flops: int  # multiply-accumulates for one image, counted as fvcore counts them

    @property
    def trainable_params(self) -> int:
        return self.params - self.frozen_params


def analytic_cost(genome: Genome) -> Cost:
    nodes = build_graph(genome).nodes.values()
    return Cost(params=sum(n["params"] for n in nodes), frozen_params=sum(n["frozen"] for n in nodes),
                flops=sum(n["flops"] for n in nodes))
