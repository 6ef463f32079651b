"""Zero-cost scores: what an untrained network does with one small batch. Higher is better for every score.

One function per score, each citing its paper: ``naswot``, ``synflow``, ``grad_norm``, ``snip``, ``zico``,
``meco``. ``zero_cost_scores`` runs them all on a deep copy of the model, so the caller's weights, buffers,
gradients and train/eval modes are never touched. Its cost: one forward pass of the batch without gradients
(NASWOT's codes and MeCo's feature maps), one forward and backward pass of the batch in ``ZICO_BATCHES`` parts
(the gradients of grad-norm, SNIP and ZiCo: ZiCo needs gradients from at least two batches, so the proxy batch
is split rather than a second one drawn), and one forward and backward pass of a single image for SynFlow.

Norm canonicalisation (DESIGN.md principle 8: a score must not reward a genome for its norm type). At
initialisation the norm type changes a network's function in ways the scores amplify and training mostly
erases: BatchNorm couples the images of a batch, LayerNorm normalises each token, GroupNorm a group of channels,
and their affine weights differ in number (a LayerNorm without bias has half). Left as they are, grad-norm,
SNIP and ZiCo move more with a genome's norm type than with its weight-init seed (benchmarks/norm_fairness.py,
tests/test_proxy_fairness.py). So while scoring, every norm layer (the registered ones,
``blocks.base.MODULES["norm"]``, and torch's, such as the BatchNorm of a conv-BN pair) computes ``standardise``
instead of its own normalisation: each sample minus its mean, over its standard deviation, over all of that
sample's values. Why this one:

- It is layout-independent: the registered norms see channels-last maps, torch's BatchNorm2d channels-first
  ones, the LayerNorm inside SS2D token sequences; a per-sample statistic needs no guess of which axis holds
  the channels, where a per-channel one would.
- It is parameter-free: the norms' own weights take no part, so neither their number nor their gradients
  count, and genomes that differ only in norm type compute the same function from the same seed (norms draw
  no random numbers at initialisation) and get the same scores.
- It is per sample: an image's activations do not depend on the rest of the batch, so splitting the batch for
  ZiCo gives exactly the full batch's gradient, and SynFlow's one-image pass normalises the same way.
- It keeps the architecture: a normalised branch still enters its residual at unit scale, so depth, residual
  structure and where norms sit (a genome with fewer norms) still show in the scores.

SynFlow is the one exception: with all-ones input and absolute weights, centring would cancel its flow to
about zero, so there every norm divides by the sample's root mean square instead (``rms_scale``: the same
per-sample, layout-free, parameter-free form, without the centring; it keeps the flow positive and, without
any norm, the flow would overflow float64 within a few blocks). A norm-free network cannot be written in the
genome grammar (every block type has a norm: a required ``norm`` field or a fixed conv-BN pair; only stem,
downsample and head norms are optional), so the scores have no such case to treat.

Non-finite values are returned as they are (a degenerate or numerically broken network), never raised, so the
search can record the trial as failed with its reason.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from blocks.activations import NOT_SWITCHING, activation_table, create_act
from blocks.base import MODULES

# Element-wise non-linearities whose input sign is the unit's on/off state: the registered activations, less
# those that scale a path rather than switch a unit (sigmoid gates) or do nothing (identity).
ACTIVATIONS = tuple(type(create_act(name)) for name in activation_table() if name not in NOT_SWITCHING)
# Every norm layer the canonicalisation replaces: torch's (BatchNorm and InstanceNorm share _NormBase) and ours.
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, *MODULES["norm"].values())
# MeCo's layers: those with weights whose outputs are feature maps (channels first for convs, last for linears).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)

ZICO_BATCHES = 2  # the proxy batch is split into this many parts for ZiCo's statistics across batches
MECO_MAX_SAMPLES = 4096  # rows (image positions) of a feature map MeCo reads, evenly spaced: bounds its cost
# Channels of a feature map MeCo reads, evenly spaced, as the paper's MeCo_opt samples channels: the eigenvalues
# cost channels^3, and 2048-channel MLP layers at 224x224 made MeCo 10 s of a 14 s score.
MECO_MAX_CHANNELS = 64
_EPS = 1e-5  # standardise's variance floor, as torch's BatchNorm and GroupNorm default to


# --------------------------------------------------------------------------------------------------------------
# Norm canonicalisation

def _sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each sample (first axis) minus its mean, over its standard deviation, both over all its values."""
    var, mean = torch.var_mean(x, dim=_sample_dims(x), correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + _EPS)


def rms_scale(x: torch.Tensor) -> torch.Tensor:
    """Each sample divided by the root mean square of its values: signs (and a positive flow) are kept."""
    return x / x.pow(2).mean(dim=_sample_dims(x), keepdim=True).sqrt().clamp_min(1e-12)


def canonicalise_norms(model: nn.Module, normalise: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Make every norm layer of ``model`` compute ``normalise`` of its input instead of its own normalisation
    (in place: call it on a copy). Returns how many layers were replaced."""
    norms = [m for m in model.modules() if isinstance(m, NORMS)]
    for m in norms:
        m.forward = normalise  # an instance attribute shadows the class's forward; nn.Module.__call__ uses it
    return len(norms)


# --------------------------------------------------------------------------------------------------------------
# Activation and feature statistics (one forward pass)

def activation_sites(model: nn.Module) -> list[nn.Module]:
    """NASWOT's units: the inputs of the switching activation modules (``ACTIVATIONS``). Those are the hidden
    layers of MLPs and the gates of gated blocks (the input of the gate's activation: a GLU's, a gated CNN's,
    Mamba's and SS2D's ``gate_act``), as well as stem, mixer and head activations. A network without any
    (identity or pooling mixers and no MLP) falls back to its blocks, whose output signs then stand for the
    units' states."""
    sites = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if sites:
        return sites
    stages = getattr(model, "stages", None)
    if stages is not None:
        return [block for stage in stages for block in getattr(stage, "blocks", [stage])]
    return [m for m in model.modules() if not list(m.children())]


def agreement_kernel(pre_activations: torch.Tensor) -> torch.Tensor:
    """NASWOT's kernel of one site: ``K[i, j]`` counts the units where images i and j have the same binary
    code (pre-activation > 0 or not); ``pre_activations`` has the images along its first axis. A non-finite
    pre-activation has no code: the kernel is then NaN."""
    values = pre_activations.detach().reshape(pre_activations.shape[0], -1)
    units = values.shape[1]
    # Codes as +-1: agreements - disagreements in one product, exact in float32 up to 2^24 units (integer sums).
    dtype = torch.float32 if units < 2**24 else torch.float64
    signs = torch.where(values > 0, 1.0, -1.0).to(dtype)
    kernel = (units + (signs @ signs.T).double()) / 2
    return kernel if torch.isfinite(values).all() else torch.full_like(kernel, math.nan)


def naswot(kernel: torch.Tensor) -> float:
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021)::

        naswot = log |det K|,   K = sum over sites of agreement_kernel(site's pre-activations)

    Networks that map different images to different activation patterns score higher; units that never switch
    (dead or identical outputs) make K singular and the score ``-inf``; a non-finite K gives NaN."""
    if not torch.isfinite(kernel).all():
        return math.nan
    sign, logdet = torch.linalg.slogdet(kernel)
    return logdet.item() if sign.item() > 0 else -math.inf


def min_correlation_eigenvalue(features: torch.Tensor) -> float:
    """The smallest eigenvalue of the Pearson correlation matrix of ``features``' columns (channels), read
    over its rows (samples). A channel that never varies has no correlation: its row of the matrix is zero,
    so the eigenvalue is 0, as it is for two identical channels, and for more channels than samples. A
    non-finite value gives NaN."""
    samples, channels = features.shape
    if channels >= samples:  # centred, the columns span at most samples - 1 dimensions: singular
        return 0.0
    if not torch.isfinite(features).all():
        return math.nan
    x = features.double()
    x = x - x.mean(dim=0)
    std = x.pow(2).mean(dim=0).sqrt()
    z = torch.where(std > 0, x / std.clamp_min(1e-300), torch.zeros_like(x))
    correlation = z.T @ z / samples
    try:
        return torch.linalg.eigvalsh(correlation)[0].item()
    except torch.linalg.LinAlgError:  # no convergence: a numerically broken map
        return math.nan


def meco(features: Sequence[torch.Tensor]) -> float:
    """MeCo (Jiang, Wang and Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
    Eigenvalue of Correlation", NeurIPS 2023)::

        meco = sum_i lambda_min(P(f_i(X)))

    over the feature maps ``f_i`` of the network's layers, ``P`` the Pearson correlation matrix between a map's
    channels, each channel's values over the map's positions being its samples. ``features`` are the maps as
    (samples, channels) matrices. The paper reads one image; ``zero_cost_scores`` pools the positions of every
    image of the batch (at most ``MECO_MAX_SAMPLES`` of them, evenly spaced), a larger sample of the same
    correlations, and reads at most ``MECO_MAX_CHANNELS`` evenly spaced channels of a map, as the paper's
    MeCo_opt samples channels to bound the cost. Higher means less redundant channels, which the paper ties
    to faster convergence."""
    return math.fsum(min_correlation_eigenvalue(f) for f in features)


def _feature_rows(output: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A weight layer's output as (samples, channels): channels first for convs, last for linears; the channels
    are picked before anything is copied (a 224x224 map is large)."""
    dim = 1 if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else output.ndim - 1
    if output.shape[dim] > MECO_MAX_CHANNELS:
        picked = torch.linspace(0, output.shape[dim] - 1, MECO_MAX_CHANNELS, device=output.device).long()
        output = output.index_select(dim, picked)
    rows = output.movedim(dim, -1).reshape(-1, output.shape[dim])
    if rows.shape[0] > MECO_MAX_SAMPLES:
        rows = rows[torch.linspace(0, rows.shape[0] - 1, MECO_MAX_SAMPLES, device=rows.device).long()]
    return rows


def _forward_statistics(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """NASWOT and MeCo from one forward pass of ``x`` without gradients."""
    kernel = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    eigenvalues: list[float] = []

    def record_codes(_module, inputs):
        kernel.add_(agreement_kernel(inputs[0]))

    def record_features(module, _inputs, output):
        eigenvalues.append(min_correlation_eigenvalue(_feature_rows(output.detach(), module)))

    sites = activation_sites(model)
    if any(isinstance(m, ACTIVATIONS) for m in sites):
        handles = [m.register_forward_pre_hook(record_codes) for m in sites]
    else:
        handles = [m.register_forward_hook(lambda m, i, out: record_codes(m, (out,))) for m in sites]
    handles += [m.register_forward_hook(record_features) for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return naswot(kernel), math.fsum(eigenvalues)  # meco(), with each map's term taken as it passes


# --------------------------------------------------------------------------------------------------------------
# Gradient scores (one forward and backward pass, in parts)

Gradients = Sequence[torch.Tensor | None]  # one per parameter tensor; None where a tensor gets no gradient


def grad_norm(grads: Gradients) -> float:
    """grad_norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021)::

        grad_norm = sum over parameter tensors theta of || dL/dtheta ||_2

    with ``L`` the cross-entropy of the batch."""
    return float(sum((g.double().norm() for g in grads if g is not None), torch.zeros((), dtype=torch.float64)))


def snip(params: Sequence[torch.Tensor], grads: Gradients) -> float:
    """SNIP's connection sensitivity (Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019), summed over the network as a zero-cost proxy by Abdelfattah et al. (ICLR 2021)::

        snip = sum over parameters theta of | theta * dL/dtheta |

    with ``L`` the cross-entropy of the batch: the first-order change of the loss if each weight were removed."""
    terms = (((p.detach().double() * g.double()).abs().sum()) for p, g in zip(params, grads) if g is not None)
    return float(sum(terms, torch.zeros((), dtype=torch.float64)))


def zico(batch_grads: Sequence[Gradients]) -> float:
    """ZiCo (Li, Yang, Wang and Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
    Gradients", ICLR 2023)::

        zico = sum over layers l of log( sum over weights w of l of  E_b[ |g_w| ] / std_b( g_w ) )

    where ``g_w`` is the cross-entropy gradient of weight ``w`` on batch ``b``, and mean and (population)
    standard deviation are taken across the batches. Large, consistent gradients score high (the paper ties
    the mean to convergence speed and the spread to generalisation). ``batch_grads[b][t]`` is batch ``b``'s
    gradient of parameter tensor ``t``; here a layer is one parameter tensor (a weight and its bias count
    apart: blocks such as the selective SSM hold several unrelated tensors in one module). Weights whose
    gradient does not vary have no ratio and are left out, as is a layer with none left; with none at all the
    score is ``-inf``. Fewer than two batches give NaN (no spread to measure)."""
    if len(batch_grads) < 2:
        return math.nan
    total, layers = 0.0, 0
    for per_batch in zip(*batch_grads):
        if any(g is None for g in per_batch):
            continue
        stacked = torch.stack([g.double() for g in per_batch])
        std = stacked.std(dim=0, correction=0)
        varying = std != 0  # NaN counts as varying, so a NaN gradient makes the score NaN
        ratio = (stacked.abs().mean(dim=0)[varying] / std[varying]).sum().item()
        if ratio != 0:
            total += math.log(ratio) if ratio > 0 else math.nan
            layers += 1
    return total if layers else -math.inf


def _split_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor]
                     ) -> tuple[list[list[torch.Tensor | None]], list[torch.Tensor | None]]:
    """The cross-entropy gradient of each of ``ZICO_BATCHES`` parts of the batch, and of the whole batch: the
    parts' gradients weighted by their sizes, which is the full batch's gradient when images do not interact
    (true under ``standardise``; with BatchNorm left as it is, each part uses its own batch statistics)."""
    parts = [p for p in torch.arange(x.shape[0], device=x.device).tensor_split(ZICO_BATCHES) if len(p)]
    batch_grads = []
    for part in parts:
        loss = F.cross_entropy(model(x[part]).float(), y[part])
        batch_grads.append(list(torch.autograd.grad(loss, params, allow_unused=True)))
    whole: list[torch.Tensor | None] = []
    for per_batch in zip(*batch_grads):
        found = [(g, len(part)) for g, part in zip(per_batch, parts) if g is not None]
        whole.append(sum(g * (n / x.shape[0]) for g, n in found) if found else None)
    return batch_grads, whole


# --------------------------------------------------------------------------------------------------------------
# SynFlow (one all-ones image)

def synflow(model: nn.Module, image_shape: Sequence[int]) -> float:
    """SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
    flow", NeurIPS 2020)::

        synflow = sum over parameters theta of | theta * dR/dtheta |,   R = sum(f_|theta|(1))

    with every parameter replaced by its absolute value and one all-ones image of ``image_shape`` as input (the
    absolute value of each term as in Abdelfattah et al.'s use of it). Runs in eval mode, in float64 (float32
    where a block cannot). Buffers (masks, indices) keep their values. Every norm computes ``rms_scale`` (see
    the module docstring); the authors' networks have BatchNorm only, and Abdelfattah et al. drop it.

    Changes ``model`` in place (weights, dtype, norms): pass a copy."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    canonicalise_norms(model, rms_scale)
    model.eval()
    device = next(model.parameters()).device
    for dtype in (torch.float64, torch.float32):
        try:
            model.to(dtype)
            flow = model(torch.ones((1, *image_shape), dtype=dtype, device=device)).sum()
            break
        except RuntimeError:  # a block that builds float32 tensors of its own
            if dtype == torch.float32:
                raise
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(flow, params, allow_unused=True)
    return float(sum((p.detach() * g).abs().sum() for p, g in zip(params, grads) if g is not None))


# --------------------------------------------------------------------------------------------------------------

SCORES = ("naswot", "synflow", "grad_norm", "snip", "zico", "meco")


def zero_cost_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                     canonical: bool = True, which: Collection[str] | None = None) -> dict[str, float]:
    """``naswot``, ``synflow``, ``grad_norm``, ``snip``, ``zico`` and ``meco`` of an untrained network on a
    small batch (cost: see the module docstring), or only those in ``which`` (a search computes the ones its
    objective weighs: NASWOT and MeCo cost a forward pass, ZiCo splits the backward pass, SynFlow a pass of its
    own). The batch scores run in train mode (dropout and drop path as in training), the gradients are of the
    cross-entropy against ``y``.

    The scores are computed on a deep copy, so ``model`` keeps its weights, buffers, gradients and modes;
    ``seed`` fixes any randomness inside the forward pass (dropout, drop path). ``canonical=False`` leaves the
    norms as they are for the batch scores (BatchNorm then uses batch statistics): for measuring what the
    canonicalisation removes, not for ranking genomes. SynFlow always uses ``rms_scale``."""
    wanted = set(SCORES if which is None else which)
    if wanted - set(SCORES):
        raise ValueError(f"unknown zero-cost scores {sorted(wanted - set(SCORES))}; known: {', '.join(SCORES)}")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    probe = copy.deepcopy(model)
    for p in probe.parameters():
        p.grad = None
    if canonical:
        canonicalise_norms(probe, standardise)
    probe.train()
    params = [p for p in probe.parameters() if p.requires_grad]
    cuda = [device] if device.type == "cuda" else []
    scores: dict[str, float] = {}
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if wanted & {"naswot", "meco"}:
            scores["naswot"], scores["meco"] = _forward_statistics(probe, x)
        if "zico" in wanted:
            batch_grads, grads = _split_gradients(probe, x, y, params)
            scores["zico"] = zico(batch_grads)
        elif wanted & {"grad_norm", "snip"}:
            grads = list(torch.autograd.grad(F.cross_entropy(probe(x).float(), y), params, allow_unused=True))
        if wanted & {"grad_norm", "snip", "zico"}:
            scores["grad_norm"], scores["snip"] = grad_norm(grads), snip(params, grads)
        if "synflow" in wanted:
            scores["synflow"] = synflow(probe, x.shape[1:])  # last: it changes the probe's weights
    return {key: scores[key] for key in SCORES if key in wanted}
