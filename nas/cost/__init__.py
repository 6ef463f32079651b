"""Cost models: analytic params, FLOPs and memory from the genome; fvcore cross-checks; on-device latency."""
from __future__ import annotations

from nas.cost.analytic import Cost, PartCost, analytic_cost, peak_memory_estimate, stage_costs
from nas.cost.budget import parse_flops, parse_latency_ms, parse_params
from nas.cost.calibration import genome_latency
from nas.cost.latency import LatencyResult, LatencyTable, measure_latency, predict_latency

__all__ = ["Cost", "LatencyResult", "LatencyTable", "PartCost", "analytic_cost", "genome_latency",
           "measure_latency", "parse_flops", "parse_latency_ms", "parse_params", "peak_memory_estimate",
           "predict_latency", "stage_costs"]
