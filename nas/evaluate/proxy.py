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

import functools
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn

from blocks.base import CONFIGS
from nas.cost import Cost, analytic_cost
from nas.evaluate.zero_cost import SCORES, zero_cost_scores
from nas.genome import Genome
from nas.graph import build_graph, node_family, node_mixer_type
from nas.io import shipped_space_name

__all__ = ["combine", "fitted_objective", "genome_descriptors", "lacking_descriptors", "objective_contributions",
           "objective_terms", "proxy_score", "structural_score", "unweighed_descriptors", "with_norm_type",
           "zero_cost_scores"]

# The descriptor terms that name a family or a mixer type (``genome_descriptors``): a prefix, then the name; an
# absent one is 0.
DESCRIPTOR_SHARE, DESCRIPTOR_LAST, DESCRIPTOR_LEVEL = "flops_share:", "last:", "at_level:"
DESCRIPTOR_WIDTH_AT, DESCRIPTOR_WIDTH_FALLS = "log_width_at:", "width_falls"
# Descriptors present only where the genome has what they count; an absent one is 0.
SPARSE_DESCRIPTORS = (DESCRIPTOR_SHARE, DESCRIPTOR_LAST, DESCRIPTOR_LEVEL, DESCRIPTOR_WIDTH_AT, DESCRIPTOR_WIDTH_FALLS)
# Descriptors of a map the genome may not have: absent, they say nothing (a width of 0 channels would be far
# outside any fit), so they add nothing to the score, as if at the fit's mean.
NEUTRAL_WHEN_ABSENT = (DESCRIPTOR_WIDTH_AT,)
# DeepMAD's multi-scale weights: the last stage's entropy counts 8 times, each earlier stage once.
LAST_STAGE_WEIGHT = 8.0
# DeepMAD's bound on effectiveness rho = depth / mean width; above it, entropy is discounted by rho0 / rho.
MAX_EFFECTIVENESS = 0.5


# --------------------------------------------------------------------------------------------------------------
# Structural, data-free

def structural_score(genome: Genome, graph: nx.DiGraph | None = None) -> float:
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
    higher-resolution networks score higher; the search's budgets keep that in check. ``graph``: the genome's
    ``canonical_graph``, when the caller has it.
    """
    return _structural(canonical_graph(genome) if graph is None else graph)


def canonical_graph(genome: Genome) -> nx.DiGraph:
    """The genome's graph with every norm a LayerNorm: what the data-free terms read, so that none of them
    depends on the norm type."""
    return build_graph(Genome.model_validate(with_norm_type(genome.to_dict(), "layernorm")))


def _structural(graph: nx.DiGraph) -> float:
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


def genome_descriptors(genome: Genome, graph: nx.DiGraph | None = None) -> dict[str, float]:
    """What the genome is made of, as terms of the fitted objective (``combine``), read from its graph with
    every norm a LayerNorm (``canonical_graph``, or ``graph`` when the caller has it):

    - ``flops_share:F``: the share of the blocks' FLOPs spent in blocks of family ``F`` (``node_family``: the
      token mixer's file, such as ``attention`` or ``ssm``); only families present are listed, an absent one
      is 0;
    - ``last:F``: 1 for the family of the network's last block;
    - ``at_level:K:T``: the share of the blocks on the ``K``-th largest map (0: the largest) whose token mixer
      is of type ``T`` (the block's own type where it has no mixer); only those present are listed;
    - ``log_width_at:K``: the log of the mean output channels of the blocks on the ``K``-th largest map. Where
      the width sits matters beyond its mean and maximum: on the default space's corpus, whose stages may
      narrow, these four terms lift held-out tau by about 0.05 (benchmarks/BENCHMARKS.md). A linear objective
      reads only differences of logs, so a space with every width scaled by one factor ranks the same;
    - ``blocks``: how many blocks; ``log_mean_width`` and ``log_max_width``: the log of the blocks' mean and
      largest output channels;
    - ``width_falls``: the sum of ``log(a / b)`` over consecutive blocks whose width falls from ``a`` to ``b``;
      listed only when some width falls. The tiny space widens at every stage; the hybrid32 corpus's stages may
      narrow, so the shipped objective (fitted on both) weighs it. What an objective has no weight for, ``nas
      score`` names (``unweighed_descriptors``).

    On the trained corpus these say what the zero-cost scores miss: which mixer holds the compute and where it
    sits, and how deep and wide the network is (benchmarks/BENCHMARKS.md, "How far to trust each objective")."""
    graph = canonical_graph(genome) if graph is None else graph
    flops: dict[str, float] = {}
    widths: list[int] = []
    on_map: list[tuple[int, str]] = []  # (map size, mixer type) per block
    last = ""
    for _, data in graph.nodes(data=True):
        if data["role"] != "block":
            continue
        last = node_family(data["config"])
        flops[last] = flops.get(last, 0.0) + data["flops"]
        widths.append(data["out_shape"][0])
        on_map.append((math.prod(data["out_shape"][1:]), node_mixer_type(data["config"])))
    if not widths:
        return {"blocks": 0.0, "log_mean_width": 0.0, "log_max_width": 0.0}
    total = sum(flops.values()) or 1.0
    per_size = Counter(size for size, _ in on_map)
    level = {size: k for k, size in enumerate(sorted(per_size, reverse=True))}
    levels: dict[str, float] = {}
    width_at: dict[str, float] = {}
    for (size, kind), width in zip(on_map, widths):
        name = f"{DESCRIPTOR_LEVEL}{level[size]}:{kind}"
        levels[name] = levels.get(name, 0.0) + 1.0 / per_size[size]
        at = f"{DESCRIPTOR_WIDTH_AT}{level[size]}"
        width_at[at] = width_at.get(at, 0.0) + width / per_size[size]
    falls = sum(math.log(a / b) for a, b in zip(widths, widths[1:]) if b < a)
    return {**{f"{DESCRIPTOR_SHARE}{family}": value / total for family, value in sorted(flops.items())},
            f"{DESCRIPTOR_LAST}{last}": 1.0, **dict(sorted(levels.items())),
            **{name: math.log(mean) for name, mean in sorted(width_at.items())}, "blocks": float(len(widths)),
            "log_mean_width": math.log(sum(widths) / len(widths)), "log_max_width": math.log(max(widths)),
            **({DESCRIPTOR_WIDTH_FALLS: falls} if falls else {})}


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

def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


# How each score enters ``combine``, given the score and the batch size: by its log where the score scales
# with the network's size or weight scale (entropy, flows, gradient sums, params, FLOPs), per image for NASWOT
# (already a log-determinant over the batch), as it is for ZiCo (a sum of logs), and by log(1 + x) for MeCo: a
# sum over layers of eigenvalues in [0, 1], so it grows with depth (0.04-2.3 on the 32x32 corpus, 0.2-60 on the
# zoo at 224x224); log(1 + x) is near x where the objective was fitted and keeps deep networks from running off.
TERMS: dict[str, Callable[[float, int], float]] = {
    "structural": lambda s, n: _log(s),
    "naswot": lambda s, n: s / n,
    "synflow": lambda s, n: _log(s),
    "grad_norm": lambda s, n: _log(s),
    "snip": lambda s, n: _log(s),
    "zico": lambda s, n: s,
    "meco": lambda s, n: _log(1.0 + s),
    "params": lambda s, n: _log(s),
    "flops": lambda s, n: _log(s),
}
# The objective the search maximises, fitted on the trained corpora by benchmarks/objective_fit.py (the command
# is in each file): per term, the corpus mean and standard deviation and a weight. ``any.json`` is fitted on
# every corpus and scores any space; a shipped space with a corpus of its own has its own fit, since one fit
# for all spaces must share its weights between them and ranks each space's genomes less well
# (``metaformer_hybrid.json``, fitted on the corpus of its 32x32 model hybrid32; ``tiny.json``, on the tiny
# corpus: benchmarks/BENCHMARKS.md). Each has a ``.data`` twin fitted on scores of the tasks' own images, which
# scores a search given ``--data``: a score's spread over genomes differs between the structured batch and real
# images, and on real images more of the scores carry weight.
OBJECTIVES = Path(__file__).with_name("objectives")
GENERAL_OBJECTIVE = "any"
ON_DATA = ".data"  # the suffix of a fit on the task's images


def objective_name(space: str | None = None, data: bool = False) -> str:
    """Which fit scores the genomes of ``space`` (a shipped space's name or a space file; ``None``: no space):
    the space's own where it is a shipped space that has one, else ``any``; with ``data`` (the zero-cost scores
    see the task's images), its twin fitted on such scores, where one is shipped. The other functions here take
    the name this gives as ``fit``."""
    name = shipped_space_name(space) if space else None
    name = name if name and (OBJECTIVES / f"{name}.json").is_file() else GENERAL_OBJECTIVE
    return name + ON_DATA if data and (OBJECTIVES / f"{name}{ON_DATA}.json").is_file() else name


@functools.cache
def fitted_objective(fit: str | None = None) -> dict[str, Any]:
    """The shipped objective named ``fit`` (``objective_name``; ``None``: ``any``): ``{"features": [{"name",
    "mean", "std", "weight"}, ...], "command": ..., "corpora": ..., ...}``."""
    path = OBJECTIVES / f"{fit or GENERAL_OBJECTIVE}.json"
    if not path.is_file():
        raise ValueError(f"no shipped objective is named {fit!r}; objective_name(space) gives the one for a space")
    return json.loads(path.read_text())


def objective_identity(fit: str | None = None) -> dict[str, str]:
    """The fit named ``fit`` and a digest of its file: a run records it, and a resumed run scored by another fit
    (an upgrade of nas that refitted it) is refused, as its scores would not compare."""
    name = fit or GENERAL_OBJECTIVE
    fitted_objective(name)  # a name no file has is an error here too
    digest = hashlib.sha256((OBJECTIVES / f"{name}.json").read_bytes()).hexdigest()[:12]
    return {"name": name, "digest": digest}


def describe_objective(identity: dict[str, str]) -> str:
    """A recorded fit (``objective_identity``) in words, for a report: its file and digest, its corpora and how
    well it ranks their held-out genomes, where the fit ``objective_fit.py --write`` recorded that and this nas
    still ships the same file; its name and digest alone otherwise."""
    name, digest = identity["name"], identity["digest"]
    text = f"fit `{name}.json` ({digest})"
    if not (OBJECTIVES / f"{name}.json").is_file() or objective_identity(name) != identity:
        return text + ", which this nas no longer ships"
    fitted = fitted_objective(name)
    counts = fitted.get("corpora", {})
    where = ", ".join(f"benchmarks/results/{corpus}" + (f": {count}" if len(counts) > 1 else "")
                      for corpus, count in counts.items())
    images = " (scores of the tasks' images)" if fitted.get("batch") == "task" else ""
    model = f", {fitted['model']}," if KERNEL in fitted else ""
    text += f"{model} on {sum(counts.values())} trained genomes ({where}){images}"
    held_out = fitted.get("held_out_tau", {})
    if held_out:
        text += "; Kendall tau on held-out genomes " + ", ".join(f"{t:+.3f} ({task})" for task, t in held_out.items())
    return text


def combine(terms: dict[str, float], batch_size: int, weights: dict[str, float] | None = None,
            fit: str | None = None) -> float:
    """The objective the search maximises: ``sum_k w_k * (t_k - mean_k) / std_k`` over the terms of the shipped
    objective named ``fit`` (``fitted_objective``). A term is a score scaled by ``TERMS`` (the zero-cost and
    structural scores, ``params`` and ``flops``) or a descriptor of the genome as ``genome_descriptors`` gives it
    (a family's descriptor missing from ``terms`` is 0: the genome has no block of that family).
    ``benchmarks/objective_fit.py --write`` fits the weights to the rank of trained accuracy on the corpus, and
    the file records the command and the corpus it was fitted on. A fit written with ``--model kernel`` (the
    tiny space's) adds a kernel ridge on the same standardised terms, fitted on what the ridge leaves
    (``KERNEL``). ``weights`` instead gives
    ``sum_k weights[k] * t_k`` (for studies of other combinations); terms weighted zero may be missing.

    Logs make the combination usable on a single trial: a score's units, or any constant factor in it, only
    shift ``score`` by a constant, so no statistics over other trials are needed. A NaN in any score makes
    ``score`` NaN (a broken network, for the search to record as failed)."""
    if any(math.isnan(value) for key, value in terms.items() if key in TERMS):
        return math.nan
    if weights is not None:
        return sum(weight * term for key, weight in weights.items()
                   if weight and (term := objective_term(terms, key, batch_size)) is not None)
    return sum(objective_contributions(terms, batch_size, fit).values())


def objective_contributions(terms: dict[str, float], batch_size: int, fit: str | None = None
                            ) -> dict[str, float]:
    """What each term of the shipped objective ``fit`` adds to ``combine``'s sum, ``w_k * (t_k - mean_k) /
    std_k``, and for a fit with a kernel, what the kernel adds (``KERNEL_PART``): how a score is made (``nas
    score`` prints the largest)."""
    fitted = fitted_objective(fit)
    parts = {f["name"]: _contribution(f, terms, batch_size) for f in fitted["features"] if f["weight"]}
    if KERNEL in fitted:
        parts[KERNEL_PART] = _kernel_part(terms, batch_size, fit)
    return parts


# A fit whose file has this key (``objective_fit.py --model kernel``, the tiny space's) adds to its ridge a kernel
# ridge fitted on what the ridge leaves: ``gamma``, ``support`` (the fitting genomes' standardised rows) and
# ``dual`` (their coefficients). Far from every fitting genome the kernel adds nothing and the ridge alone speaks.
KERNEL = "kernel"
KERNEL_PART = "kernel (interactions)"  # its entry in ``objective_contributions``


@functools.cache
def _kernel(fit: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """A kernel fit's support rows, dual coefficients and gamma as arrays, made once: the data-free score reads
    them for every genome a search screens."""
    kernel = fitted_objective(fit)[KERNEL]
    return np.asarray(kernel["support"], dtype=float), np.asarray(kernel["dual"], dtype=float), kernel["gamma"]


def _kernel_part(terms: dict[str, float], batch_size: int, fit: str | None, at_mean: Collection[str] = ()) -> float:
    """What a fit's kernel adds, ``sum_i dual_i * exp(-gamma * |z - support_i|^2)``, where ``z`` is the genome's
    standardised terms; a term in ``at_mean``, or an absent descriptor whose absence says nothing
    (``NEUTRAL_WHEN_ABSENT``), sits at the corpus's mean (0), as scikit-learn's fit had it."""
    fitted = fitted_objective(fit)
    z = np.zeros(len(fitted["features"]))
    for k, feature in enumerate(fitted["features"]):
        if feature["name"] not in at_mean and (term := objective_term(terms, feature["name"], batch_size)) is not None:
            z[k] = (term - feature["mean"]) / feature["std"]
    support, dual, gamma = _kernel(fit)
    return float(np.exp(-gamma * ((support - z) ** 2).sum(axis=1)) @ dual)


def _weighed(fit: str | None) -> list[str]:
    """The terms the shipped objective ``fit`` reads: those of nonzero weight, and every one where a kernel
    reads them all."""
    fitted = fitted_objective(fit)
    return [f["name"] for f in fitted["features"] if KERNEL in fitted or f["weight"]]


def data_free_score(genome: Genome, cost: Cost | None = None, graph: nx.DiGraph | None = None,
                    structural: float | None = None, fit: str | None = None) -> float:
    """The part of ``combine``'s score that runs no network: the shipped objective's params, FLOPs, structural
    and descriptor terms, as if every zero-cost score sat at its corpus mean. A proxy search's cascade knows it
    exactly for every screened genome and learns only the rest (on the default search it ranks the trials'
    proxy scores at Kendall tau +0.93). ``cost``, ``graph``, ``structural``: the genome's ``analytic_cost``,
    ``canonical_graph`` and ``structural_score``, when the caller has them; ``fit``: which objective
    (``objective_name``)."""
    graph = canonical_graph(genome) if graph is None else graph
    structural = _structural(graph) if structural is None else structural
    terms = objective_terms(genome, {"structural": structural}, graph, cost)
    fitted = fitted_objective(fit)
    kernel = _kernel_part(terms, 1, fit, at_mean=SCORES) if KERNEL in fitted else 0.0
    return kernel + sum(_contribution(f, terms, 1) for f in fitted["features"]
                        if f["weight"] and f["name"] not in SCORES)


def _contribution(feature: dict[str, Any], terms: dict[str, float], batch_size: int) -> float:
    """``w * (t - mean) / std`` of one feature of the shipped objective; 0 for an absent descriptor whose
    absence says nothing (``NEUTRAL_WHEN_ABSENT``)."""
    term = objective_term(terms, feature["name"], batch_size)
    return 0.0 if term is None else feature["weight"] * (term - feature["mean"]) / feature["std"]


def unweighed_descriptors(terms: dict[str, float], fit: str | None = None) -> list[str]:
    """The sparse descriptors in ``terms`` that the shipped objective ``fit`` has no weight for: a family,
    a mixer type, a map size or a falling width its corpus did not hold, so the score says nothing of them
    (``nas score`` lists them)."""
    weighed = set(_weighed(fit))
    return sorted(name for name, value in terms.items()
                  if name.startswith(SPARSE_DESCRIPTORS) and value and name not in weighed)


def lacking_descriptors(terms: dict[str, float], fit: str | None = None) -> list[str]:
    """The descriptors the shipped objective ``fit`` weighs that ``terms`` lacks and whose absence adds
    nothing (``NEUTRAL_WHEN_ABSENT``): the widths of map sizes the genome does not have, such as the three
    smaller maps of an isotropic genome under a fit of four (``nas score`` lists them)."""
    return sorted(name for name in _weighed(fit) if name.startswith(NEUTRAL_WHEN_ABSENT) and name not in terms)


def objective_terms(genome: Genome, scores: dict[str, float], graph: nx.DiGraph | None = None,
                    cost: Cost | None = None) -> dict[str, float]:
    """What ``combine`` weighs for ``genome``: its ``scores``, its analytic params and FLOPs and its descriptors
    (``genome_descriptors``; ``graph``, ``cost``: its ``canonical_graph`` and ``analytic_cost``, when the caller
    has them)."""
    cost = analytic_cost(genome) if cost is None else cost
    return {**scores, "params": cost.params, "flops": cost.flops, **genome_descriptors(genome, graph)}


def objective_term(terms: dict[str, float], name: str, batch_size: int) -> float | None:
    """One term of ``combine``: a score through ``TERMS``, or a descriptor as it is; ``None`` for an absent
    descriptor whose absence says nothing (``NEUTRAL_WHEN_ABSENT``: ``log_width_at:3`` of a genome with three
    map sizes)."""
    if name in TERMS:
        return TERMS[name](terms[name], batch_size)
    if name.startswith(NEUTRAL_WHEN_ABSENT) and name not in terms:
        return None
    if name.startswith(SPARSE_DESCRIPTORS):
        return terms.get(name, 0.0)
    return terms[name]


def objective_scores(fit: str | None = None) -> set[str]:
    """The zero-cost scores the shipped objective ``fit`` weighs: what a search computes for each trial."""
    return set(_weighed(fit)) & set(SCORES)


def proxy_score(genome: Genome, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                which: Collection[str] | None = None, fit: str | None = None) -> dict[str, float]:
    """``structural``, the zero-cost scores (``naswot``, ``synflow``, ``grad_norm``, ``snip``, ``zico``,
    ``meco``; only those in ``which`` when given) and ``score`` (see ``combine``: the objective ``fit``),
    which needs those its objective weighs (``objective_scores(fit)``)."""
    graph = canonical_graph(genome)
    scores = {"structural": _structural(graph), **zero_cost_scores(model, x, y, seed=seed, which=which)}
    scores["score"] = combine(objective_terms(genome, scores, graph), x.shape[0], fit=fit)
    return scores
