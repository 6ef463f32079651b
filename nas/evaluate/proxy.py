"""Training-free scores for the search: one data-free score from the genome's graph, and zero-cost scores from
one small batch through the untrained network. Higher is better for every score.

- ``structural_score``: DeepMAD's multi-scale network entropy with its effectiveness constraint, read from the
  shape-inferred graph (no model is built).
- ``zero_cost_scores``: NASWOT, SynFlow and grad-norm. They run on a deep copy of the model, so the caller's
  weights, buffers, gradients and train/eval modes are never touched.
- ``proxy_score``: all of them plus ``score``, the search objective (see ``combine``).

Non-finite values are returned as they are (a degenerate or numerically broken network), never raised, so the
search can record the trial as failed with its reason.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from blocks.activations import NOT_SWITCHING, activation_table, create_act
from blocks.base import MODULES
from nas.genome import Genome
from nas.graph import build_graph

# Element-wise non-linearities whose input sign is the unit's on/off state: the registered activations, less
# those that scale a path rather than switch a unit (sigmoid gates) or do nothing (identity).
ACTIVATIONS = tuple(type(create_act(name)) for name in activation_table() if name not in NOT_SWITCHING)
# Layers SynFlow bypasses: they re-normalise the all-ones signal and break the positive flow.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, *MODULES["norm"].values())

# DeepMAD's multi-scale weights: the last stage's entropy counts 8 times, each earlier stage once.
LAST_STAGE_WEIGHT = 8.0
# DeepMAD's bound on effectiveness rho = depth / mean width; above it, entropy is discounted by rho0 / rho.
MAX_EFFECTIVENESS = 0.5


# --------------------------------------------------------------------------------------------------------------
# Structural, data-free

def structural_score(genome: Genome, *, graph: nx.DiGraph | None = None) -> float:
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

    Wider, deeper and higher-resolution networks score higher; the search's budgets keep that in check.
    """
    graph = graph if graph is not None else build_graph(genome)
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


# --------------------------------------------------------------------------------------------------------------
# Zero-cost, from one batch

@contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _activation_sites(model: nn.Module) -> list[nn.Module]:
    """Activation modules; a network without any (identity or pooling mixers and no MLP) falls back to its
    blocks, whose output signs then stand for the units' states."""
    sites = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if sites:
        return sites
    stages = getattr(model, "stages", None)
    if stages is not None:
        return [block for stage in stages for block in getattr(stage, "blocks", [stage])]
    return [m for m in model.modules() if not list(m.children())]


def _naswot_and_grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One forward and backward pass on the batch, in train mode (BatchNorm uses batch statistics, as in the
    papers' code).

    NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): each image's binary
    code is the sign of every pre-activation (the input of each activation module, see ``_activation_sites``);
    ``K[i, j]`` counts the units where images i and j agree, and the score is ``log|det K|``. Networks that map
    different images to different activation patterns score higher; units that never switch (dead or identical
    outputs) make K singular and the score ``-inf``.

    grad_norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021): the sum over
    parameter tensors of the L2 norm of the cross-entropy gradient.
    """
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def record(_module, inputs):
        codes = (inputs[0].detach().reshape(n, -1) > 0).float()
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
        kernel.add_(agree.double())

    sites = _activation_sites(model)
    if any(isinstance(m, ACTIVATIONS) for m in sites):
        handles = [m.register_forward_pre_hook(record) for m in sites]
    else:
        handles = [m.register_forward_hook(lambda m, i, out: record(m, (out,))) for m in sites]
    model.train()
    with _hooks(handles):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grad_norm = sum(g.double().norm() for g in grads if g is not None)
    sign, logdet = torch.linalg.slogdet(kernel)
    naswot = logdet.item() if sign.item() > 0 else -math.inf
    if not torch.isfinite(kernel).all():
        naswot = math.nan
    return naswot, float(grad_norm)


def _rms_scale(_module, inputs, _output):
    x = inputs[0]
    return x / x.pow(2).mean(dim=tuple(range(1, x.ndim)), keepdim=True).sqrt().clamp_min(1e-12)


def _synflow(model: nn.Module, x: torch.Tensor) -> float:
    """SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
    flow", NeurIPS 2020): with every parameter replaced by its absolute value and one all-ones image as input,
    ``R = sum(f(1))`` and the score is ``sum_theta |theta * dR/dtheta|`` (the absolute value as in Abdelfattah
    et al.'s code: norms make some terms negative). Runs in eval mode, in float64 (float32
    where a block cannot). Buffers (masks, indices) keep their values.

    Norm layers: the authors' networks have BatchNorm only, and Abdelfattah et al. drop it for SynFlow. Here
    every norm (BatchNorm, LayerNorm, GroupNorm) instead divides its input by the sample's root mean square:
    that keeps the flow positive (a centring LayerNorm makes ``R`` cancel to about zero, even negative) and
    bounded (without any norm, squared activations overflow float64 within a few blocks). The norms' own
    weights then get no gradient and add nothing to the score."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    handles = [m.register_forward_hook(_rms_scale) for m in model.modules() if isinstance(m, NORMS)]
    model.eval()
    with _hooks(handles):
        for dtype in (torch.float64, torch.float32):
            try:
                model.to(dtype)
                ones = torch.ones((1, *x.shape[1:]), dtype=dtype, device=x.device)
                flow = model(ones).sum()
                break
            except RuntimeError:  # a block that builds float32 tensors of its own
                if dtype == torch.float32:
                    raise
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(flow, params, allow_unused=True)
    return float(sum((p.detach() * g).abs().sum() for p, g in zip(params, grads) if g is not None))


def zero_cost_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
    """``naswot``, ``synflow`` and ``grad_norm`` of an untrained network on a small batch (see the helpers
    above for each). Cost: one forward and backward pass on ``x``, one on a single image in float64.

    The scores are computed on a deep copy, so ``model`` keeps its weights, buffers, gradients and modes;
    ``seed`` fixes any randomness inside the forward pass (dropout, drop path)."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    probe = copy.deepcopy(model)
    for p in probe.parameters():
        p.grad = None
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        naswot, grad_norm = _naswot_and_grad_norm(probe, x, y)
        synflow = _synflow(probe, x)
    return {"naswot": naswot, "synflow": synflow, "grad_norm": grad_norm}


# --------------------------------------------------------------------------------------------------------------
# The search objective

# Weights of the log-scaled scores in ``score``: equal, with NASWOT left out because it ranked trained accuracy
# the wrong way on both data sets of the validity benchmark (benchmarks/BENCHMARKS.md, "Proxy validity").
WEIGHTS = {"structural": 1.0, "naswot": 0.0, "synflow": 1.0, "grad_norm": 1.0}


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def combine(scores: dict[str, float], batch_size: int, weights: dict[str, float] | None = None) -> float:
    """The objective the search maximises: ``sum_k WEIGHTS[k] * t_k`` over log-scaled scores, ``t = log(s)``
    for structural, SynFlow and grad-norm and ``naswot / batch_size`` for NASWOT (already a log-determinant;
    per image, so the batch size does not shift it). ``weights`` replaces ``WEIGHTS`` (for studies).

    Logs make the combination rank-free and usable on a single trial: a score's units, or any constant factor
    in it, only shift ``score`` by a constant, so no statistics over other trials are needed to normalise it.
    A NaN in any score makes ``score`` NaN (a broken network, for the search to record as failed).

    Default: ``log(structural) + log(synflow) + log(grad_norm)``. On 30 tiny-space genomes trained for 4 epochs
    its Kendall tau against accuracy was +0.01 (synthetic) and +0.18 (digits); NASWOT alone was -0.26 and
    -0.35, so it is reported but not weighted. Neither figure is far from noise: treat ``score`` as a cheap
    filter for broken or starved networks, not as a ranking of good ones."""
    if any(math.isnan(scores[key]) for key in ("structural", "naswot", "synflow", "grad_norm")):
        return math.nan
    terms = {"structural": _log(scores["structural"]), "naswot": scores["naswot"] / batch_size,
             "synflow": _log(scores["synflow"]), "grad_norm": _log(scores["grad_norm"])}
    return sum(weight * terms[key] for key, weight in (weights or WEIGHTS).items() if weight)


def proxy_score(genome: Genome, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0
                ) -> dict[str, float]:
    """``structural``, ``naswot``, ``synflow``, ``grad_norm`` and ``score`` (see ``combine``)."""
    scores = {"structural": structural_score(genome), **zero_cost_scores(model, x, y, seed=seed)}
    scores["score"] = combine(scores, x.shape[0])
    return scores
