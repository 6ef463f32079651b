"""Cost models: analytic params, FLOPs and memory from the genome; fvcore cross-checks; on-device latency."""
from __future__ import annotations

from nas.cost.analytic import Cost, PartCost, analytic_cost, peak_memory_estimate, stage_costs
from nas.cost.budget import parse_flops, parse_latency_ms, parse_params

__all__ = ["Cost", "PartCost", "analytic_cost", "parse_flops", "parse_latency_ms", "parse_params",
           "peak_memory_estimate", "stage_costs"]
