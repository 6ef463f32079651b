"""Zero-cost scores measure the architecture, not its norm type (DESIGN.md principle 8): genomes that differ
only in their norms score within the spread that weight-initialisation seeds alone cause, and without the
norm canonicalisation they would not."""
from __future__ import annotations

import math

import pytest
import torch

from nas import compile_model, load_genome
from nas.evaluate.batch import proxy_batch
from nas.evaluate.proxy import genome_descriptors, structural_score
from nas.evaluate.zero_cost import canonicalise_norms, standardise, zero_cost_scores

NORMS = ("layernorm", "batchnorm", "groupnorm")
SEEDS = (0, 1, 2)
# Two-stage hybrids at 32x32: conv then attention; pooling then a gated SS2D (fixed LayerNorm inside).
MIXERS = {"conv_attention": ({"type": "dwconv", "kernel": 3}, {"type": "attention", "head_dim": 8}),
          "pooling_ss2d": ({"type": "pooling", "pool_size": 3}, {"type": "ss2d", "d_state": 2, "ratio": 1.0})}


def hybrid(mixers: str, norm: str) -> dict:
    """A genome whose every norm (stem, blocks, downsample, head) is ``norm``."""
    first, second = MIXERS[mixers]
    return {
        "name": f"{mixers}_{norm}", "input": {"channels": 3, "resolution": 32}, "num_classes": 10,
        "stem": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1, "post_norm": norm},
        "defaults": {"norm": norm, "mlp": {"type": "mlp", "ratio": 2, "act": "gelu"},
                     "downsample": {"type": "conv", "kernel": 3, "stride": 2, "padding": 1, "pre_norm": norm}},
        "stages": [{"depth": 1, "width": 16, "block": {"mixer": first}},
                   {"depth": 1, "width": 32, "block": {"mixer": second}}],
        "head": {"type": "linear", "norm": norm},
    }


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return proxy_batch(channels=3, resolution=32, num_classes=10, count=8, seed=0)


def scores_by_norm_and_seed(mixers: str, batch, norms=NORMS, canonical: bool = True) -> dict[str, list[dict]]:
    return {norm: [zero_cost_scores(compile_model(hybrid(mixers, norm), seed=s), *batch, canonical=canonical)
                   for s in SEEDS] for norm in norms}


def gap_and_spread(table: dict[str, list[dict]], key: str) -> tuple[float, float]:
    """(the largest difference between norm types at one seed, the smallest spread across seeds of one norm
    type) of score ``key``."""
    values = {norm: [scores[key] for scores in runs] for norm, runs in table.items()}
    gap = max(max(at_seed) - min(at_seed) for at_seed in zip(*values.values()))
    spread = min(max(runs) - min(runs) for runs in values.values())
    return gap, spread


@pytest.mark.parametrize("mixers", sorted(MIXERS))
def test_every_zero_cost_score_differs_less_between_norm_types_than_between_seeds(mixers, batch):
    table = scores_by_norm_and_seed(mixers, batch)
    keys = table["layernorm"][0].keys()
    assert set(keys) == {"naswot", "synflow", "grad_norm", "snip", "zico", "meco"}
    for key in keys:
        assert all(math.isfinite(scores[key]) for runs in table.values() for scores in runs), key
        gap, spread = gap_and_spread(table, key)
        assert spread > 0, key  # the seeds do change the score: the bound is not vacuous
        assert gap <= spread, (key, gap, spread)


def test_without_canonical_norms_grad_norm_measures_the_norm_type(batch):
    """The same check on grad-norm with every norm left as it is: BatchNorm against LayerNorm moves the score
    by more than three seeds do, so the check above can fail."""
    table = scores_by_norm_and_seed("conv_attention", batch, norms=("layernorm", "batchnorm"), canonical=False)
    gap, spread = gap_and_spread(table, "grad_norm")
    assert gap > spread, (gap, spread)


@pytest.mark.parametrize("mixers", sorted(MIXERS))
def test_the_structural_score_and_the_descriptors_ignore_the_norm_type(mixers):
    """BatchNorm folds to 2 FLOPs a value and LayerNorm costs 5; the structural score and the descriptors (each
    family's share of the FLOPs) count each as a LayerNorm, so genomes that differ only there get one score."""
    scores = {structural_score(load_genome(hybrid(mixers, norm))) for norm in NORMS}
    assert len(scores) == 1
    described = [genome_descriptors(load_genome(hybrid(mixers, norm))) for norm in NORMS]
    assert all(d == described[0] for d in described)


def test_every_norm_layer_is_replaced_by_the_canonical_standardisation():
    """Registered norms (channels-last), torch's BatchNorm2d of conv-BN pairs (channels-first) and the LayerNorm
    inside SS2D (token sequences) all compute ``standardise`` of their input."""
    genome = hybrid("pooling_ss2d", "batchnorm")
    genome["stages"][0]["block"] = {"type": "mbconv"}  # MobileNetV2's inverted residual: conv-BN pairs
    model = compile_model(genome, seed=0)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.modules.batchnorm._NormBase,
                                                          torch.nn.LayerNorm))]
    assert {type(m).__name__ for m in norms} >= {"BatchNorm", "BatchNorm2d", "LayerNorm"}
    assert canonicalise_norms(model, standardise) == len(norms)
    x = torch.randn(2, 4, 4, 16) * 3 + 1
    for norm in norms:
        assert torch.allclose(norm(x), standardise(x))
    assert torch.allclose(standardise(x).mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(standardise(x).std(dim=(1, 2, 3), correction=0), torch.ones(2), atol=1e-4)
