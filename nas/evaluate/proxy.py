"""Training-free scores for the search: one data-free score from the genome's graph, and zero-cost scores from
one small batch through the untrained network. Higher is better for every score.

- ``structural_score``: DeepMAD's multi-scale network entropy with its effectiveness constraint, read from the
  shape-inferred graph (no model is built).
- ``zero_cost_scores`` (``nas.evaluate.zero_cost``): NASWOT, SynFlow, grad-norm, SNIP, ZiCo and MeCo, with
  every norm layer computing one canonical normalisation, on a deep copy of the model.
- ``proxy_score``: all of them plus ``score``, the search objective (see ``combine``).

None of them depends on a genome's norm type (DESIGN.md principle 8; tests/test_proxy_fairness.py).
Non-finite values are returned as they are (a degenerate or numerically broken network), never raised, so the
search can record the trial as failed with its reason.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from blocks.base import CONFIGS
from nas.evaluate.zero_cost import zero_cost_scores
from nas.genome import Genome
from nas.graph import build_graph

__all__ = ["WEIGHTS", "combine", "proxy_score", "structural_score", "with_norm_type", "zero_cost_scores"]

# DeepMAD's multi-scale weights: the last stage's entropy counts 8 times, each earlier stage once.
LAST_STAGE_WEIGHT = 8.0
# DeepMAD's bound on effectiveness rho = depth / mean width; above it, entropy is discounted by rho0 / rho.
MAX_EFFECTIVENESS = 0.5


# --------------------------------------------------------------------------------------------------------------
# Structural, data-free

def structural_score(genome: Genome) -> float:
    """DeepMAD's network entropy (Shen et al., "DeepMAD: Mathematical Architecture Design for Deep
    Convolutional Neural Network", CVPR 2023, arXiv:2303.02165), read from the genome graph.

    DeepMAD models a network as an MLP-like chain of layers of widths ``w_l``; the entropy of the feature map
    after stage ``i`` (``c_i`` channels at ``h_i x w_i``) is::

        H_i = log(c_i * h_i * w_i) * sum_{l <= end of stage i} log(w_l)

    Here a layer is each stem, downsample and block node of ``nas.graph.build_graph``, and its width is its
    fan-in: the node's multiply-accumulates per output value, ``flops / (C_out * H_out * W_out)`` (``c * k^2``
    for a plain conv; ``2 * ratio * c`` plus the mixer's share for a MetaFormer block), so kernel size, MLP ratio
    and mixer cost all count. The score is the multi-scale mean ``sum_i a_i H_i / sum_i a_i`` with DeepMAD's
    weights (``a = 8`` for the last stage, 1 for the others), multiplied by ``min(1, rho0 / rho)``, a soft form
    of DeepMAD's effectiveness constraint ``rho = L / w_mean <= rho0`` (``L`` layers, ``w_mean`` the geometric
    mean of their channel counts, ``rho0 = 0.5``): depth that outgrows width stops adding entropy. DeepMAD's
    stage-depth-variance term is left out. The head is not counted (DeepMAD scores the map before pooling).

    Every norm counts as a LayerNorm (``with_norm_type``), so a genome's norm type, whose FLOPs per value
    differ (5 for LayerNorm, 2 for folded BatchNorm), does not change its fan-in. Wider, deeper and
    higher-resolution networks score higher; the search's budgets keep that in check.
    """
    graph = build_graph(Genome.model_validate(with_norm_type(genome.to_dict(), "layernorm")))
    log_widths: list[float] = []
    log_channels: list[float] = []
    stage_entropy: dict[int, float] = {}
    for _, data in graph.nodes(data=True):
        if data["role"] not in ("stem", "downsample", "block"):
            continue
        outputs = math.prod(data["out_shape"])
        log_widths.append(math.log(max(data["flops"] / outputs, 1.0)))
        log_channels.append(math.log(data["out_shape"][0]))
        if data["stage"] >= 0:  # the last node of a stage overwrites its earlier ones
            stage_entropy[data["stage"]] = math.log(outputs) * sum(log_widths)
    stages = sorted(stage_entropy)
    weights = [LAST_STAGE_WEIGHT if s == stages[-1] else 1.0 for s in stages]
    entropy = sum(w * stage_entropy[s] for w, s in zip(weights, stages)) / sum(weights)
    effectiveness = len(log_channels) / math.exp(sum(log_channels) / len(log_channels))
    return entropy * min(1.0, MAX_EFFECTIVENESS / effectiveness)


def with_norm_type(data: dict[str, Any], norm: str) -> dict[str, Any]:
    """A genome (or space) mapping with every norm field (``norm``, ``pre_norm``, ``post_norm``, ...) that holds
    a norm replaced by a default ``norm`` of that type; absent (null) norms stay absent."""
    norm_types = set(CONFIGS["norm"])

    def is_norm(value: Any) -> bool:  # a norm config, or its shorthand ``norm: layernorm``
        kind = value.get("type") if isinstance(value, dict) else value
        return isinstance(kind, str) and kind in norm_types

    def replaced(value: Any, key: str = "") -> Any:
        if key.endswith("norm") and is_norm(value):
            return {"type": norm}
        if isinstance(value, dict):
            return {k: replaced(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [replaced(v) for v in value]
        return value

    return replaced(data)


# --------------------------------------------------------------------------------------------------------------
# The search objective

# Weights of the scaled scores in ``score``: equal, with NASWOT left out because it ranked trained accuracy the
# wrong way on both data sets of the validity benchmark (benchmarks/BENCHMARKS.md, "Proxy validity"). SNIP,
# ZiCo and MeCo are reported but weigh nothing until the objective is fitted on a trained corpus.
WEIGHTS = {"structural": 1.0, "naswot": 0.0, "synflow": 1.0, "grad_norm": 1.0, "snip": 0.0, "zico": 0.0,
           "meco": 0.0}


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


# How each score enters ``combine``, given the score and the batch size: by its log where the score scales
# with the network's size or weight scale (entropy, flows, gradient sums), per image for NASWOT (already a
# log-determinant over the batch), as it is for ZiCo (a sum of logs) and MeCo (a sum of eigenvalues of
# correlation matrices, each at most 1).
TERMS: dict[str, Callable[[float, int], float]] = {
    "structural": lambda s, n: _log(s),
    "naswot": lambda s, n: s / n,
    "synflow": lambda s, n: _log(s),
    "grad_norm": lambda s, n: _log(s),
    "snip": lambda s, n: _log(s),
    "zico": lambda s, n: s,
    "meco": lambda s, n: s,
}


def combine(scores: dict[str, float], batch_size: int, weights: dict[str, float] | None = None) -> float:
    """The objective the search maximises: ``sum_k WEIGHTS[k] * t_k`` over scaled scores (``TERMS``):
    ``t = log(s)`` for structural, SynFlow, grad-norm and SNIP, ``naswot / batch_size`` for NASWOT, ZiCo and
    MeCo as they are. ``weights`` replaces ``WEIGHTS`` (for studies); scores weighted zero may be missing
    (records from before they existed).

    Logs make the combination rank-free and usable on a single trial: a score's units, or any constant factor
    in it, only shift ``score`` by a constant, so no statistics over other trials are needed to normalise it.
    A NaN in any score makes ``score`` NaN (a broken network, for the search to record as failed).

    Default: ``log(structural) + log(synflow) + log(grad_norm)``. On 30 tiny-space genomes trained for 4 epochs
    its Kendall tau against accuracy was +0.01 (synthetic) and +0.18 (digits); NASWOT alone was -0.26 and
    -0.35, so it is reported but not weighted. Those figures were measured on a white-noise batch and before
    norms were made canonical, and neither is far from noise: treat ``score`` as a cheap filter for broken or
    starved networks, not as a ranking of good ones."""
    if any(math.isnan(value) for key, value in scores.items() if key in TERMS):
        return math.nan
    return sum(weight * TERMS[key](scores[key], batch_size) for key, weight in (weights or WEIGHTS).items()
               if weight)


def proxy_score(genome: Genome, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0
                ) -> dict[str, float]:
    """``structural``, the zero-cost scores (``naswot``, ``synflow``, ``grad_norm``, ``snip``, ``zico``,
    ``meco``) and ``score`` (see ``combine``)."""
    scores = {"structural": structural_score(genome), **zero_cost_scores(model, x, y, seed=seed)}
    scores["score"] = combine(scores, x.shape[0])
    return scores
