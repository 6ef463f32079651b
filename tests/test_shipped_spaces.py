"""The shipped search spaces: each validates, the default one offers every mixer family in every stage, and
sampled costs span what each space promises (the percentiles written at the top of each YAML file)."""
from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest
import torch

from nas import analytic_cost, compile_model, load_genome
from nas.io import read_yaml
from nas.space import check_space, choices, instantiate, random_picker

SHIPPED = ["metaformer_hybrid", "mobile", "isotropic", "tiny"]

# The families the default space must offer in every stage (issue 5), by mixer type.
FAMILIES = {
    "conv": {"dwconv", "largekernel", "inception", "gated_aggregation"},
    "separable conv": {"sepconv"},
    "pooling": {"pooling"},
    "attention": {"attention", "window_attention", "reduction_attention", "neighborhood_attention", "channel_attention",
                  "glmix", "outlook_attention", "single_head_attention", "conv_attention"},
    "ssm": {"ss2d", "mamba", "vim"},
    "modulation": {"focal_modulation", "gnconv", "lka", "scale_aware_modulation"},
    "mlp": {"shift_mlp", "global_filter", "token_mlp"},
}


def space(name: str):
    return read_yaml(name)[0]  # a shipped space is found by its bare name


def sampled_costs(name: str, n: int) -> tuple[list[float], list[float]]:
    """(GFLOPs, M params) of ``n`` random genomes, analytically: no model is built."""
    data, rng = space(name), random.Random(0)
    costs = [analytic_cost(load_genome(instantiate(data, random_picker(rng)))) for _ in range(n)]
    return [c.flops / 1e9 for c in costs], [c.params / 1e6 for c in costs]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_validates_without_shape_problems(name):
    # check_space forces every option of every choice once, then samples; a structural error raises.
    report = check_space(space(name), samples=50, seed=0)
    assert report.shape_problems == [] and report.valid == report.sampled


def test_default_space_offers_every_family_and_knob_in_every_stage():
    data = space("metaformer_hybrid")
    assert len(data["stages"]) == 4 and data["input"]["resolution"] == 224 and data["num_classes"] == 1000
    paths = {c.path: c for c in choices(data)}
    for i in range(4):
        mixers = {option["type"] for option in paths[f"stages[{i}].block.mixer"].options}
        missing = [family for family, types in FAMILIES.items() if not mixers & types]
        assert not missing, f"stage {i} offers no {missing}"
        assert {f"stages[{i}].depth", f"stages[{i}].width", f"stages[{i}].block.mlp.ratio"} <= set(paths)
        knobs = {p.rsplit(".", 1)[1] for p in paths if p.startswith(f"stages[{i}].block.mixer.choice[")}
        assert {"kernel", "head_dim"} <= knobs
        if i < 2:  # global attention over 56x56 or 28x28 tokens is too costly: windows there
            assert "window" in knobs


def test_default_space_offers_the_mixers_of_the_newer_hybrids():
    paths = {c.path: c for c in choices(space("metaformer_hybrid"))}
    offered = [{option["type"] for option in paths[f"stages[{i}].block.mixer"].options} for i in range(4)]
    # MogaNet, DaViT and GLNet everywhere
    assert all({"gated_aggregation", "channel_attention", "glmix"} <= stage for stage in offered)
    assert all("outlook_attention" in stage for stage in offered[:2])  # VOLO: at high resolution
    assert all({"single_head_attention", "conv_attention"} <= stage for stage in offered[2:])  # SHViT, CvT


def test_the_corpus_wider_space_holds_every_mixer_type_of_the_default_space_stage_by_stage():
    # benchmarks/spaces/hybrid32.yaml: the trained corpus's second space, so that the fitted objective can be
    # judged on every mixer type the default search can pick, on each of its four maps.
    wide = read_yaml(Path(__file__).parents[1] / "benchmarks" / "spaces" / "hybrid32.yaml")[0]
    report = check_space(wide, samples=20, seed=0)
    assert report.shape_problems == [] and report.valid == report.sampled
    assert wide["input"]["resolution"] == 32 and len(wide["stages"]) == 4

    def offered(data):
        paths = {c.path: c for c in choices(data)}
        return [{option["type"] for option in paths[f"stages[{i}].block.mixer"].options} for i in range(4)]
    assert offered(wide) == offered(space("metaformer_hybrid"))


def test_default_space_spans_the_4_gflops_budget():
    gflops, params = sampled_costs("metaformer_hybrid", 300)
    assert min(gflops) < 1.0 and max(gflops) > 8.0
    # 2000 samples gave 5th/50th/95th percentiles of 1.39 / 3.58 / 8.44 G (the file's header)
    assert 1.0 < percentile(gflops, 5) < 2.0
    assert 3.0 < statistics.median(gflops) < 4.5  # the budget cuts the space near its middle
    assert 6.5 < percentile(gflops, 95) < 10.5
    assert 0.3 < sum(g <= 4.0 for g in gflops) / len(gflops) < 0.8
    assert 5 < percentile(params, 5) and percentile(params, 95) < 70


def test_mobile_space_is_mbconv_with_strided_stages_under_a_gflop():
    data = space("mobile")
    assert {stage["block"]["type"] for stage in data["stages"]} == {"mbconv"}
    assert sum(stage.get("stride", 1) == 2 for stage in data["stages"]) == 4  # stem /2, then 4 strides: /32
    gflops, _ = sampled_costs("mobile", 200)
    assert 0.2 < min(gflops) and max(gflops) < 1.3
    assert 0.3 < percentile(gflops, 5) and percentile(gflops, 95) < 1.0


def test_isotropic_space_keeps_its_width_and_grid():
    data = space("isotropic")
    genome = load_genome(instantiate(data, random_picker(random.Random(0))))
    assert len(genome.stages) == 1 and genome.stages[0].downsample is None and genome.stem.pos_embed
    gflops, _ = sampled_costs("isotropic", 200)
    assert min(gflops) < 1.0 and max(gflops) > 6.0


def test_tiny_space_builds_small_models_that_run_at_32px():
    gflops, _ = sampled_costs("tiny", 200)
    assert 1e-3 < min(gflops) and max(gflops) < 30e-3  # 1-30 MFLOPs
    rng = random.Random(1)
    for _ in range(4):
        genome = load_genome(instantiate(space("tiny"), random_picker(rng)))
        model = compile_model(genome).eval()
        assert sum(p.numel() for p in model.parameters()) == analytic_cost(genome).params
        with torch.inference_mode():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
