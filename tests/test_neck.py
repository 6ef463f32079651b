"""Necks (FPN, PAFPN, SEPC) over a backbone's stage outputs: analytic description against the module and
fvcore, the genome field, validation errors with YAML paths, profile at 800x1333, --features-only export, and
a search with a neck at a non-square resolution."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import nas
from blocks import CONFIGS, create
from nas import compile_model, load_genome
from nas.cost import analytic_cost
from nas.cost.fvcore import fvcore_by_module, fvcore_flops
from nas.cost.profile import profile
from nas.errors import GenomeError
from nas.graph import build_graph
from nas.network import count_parameters
from nas.search import InfeasibleBudget
from tests.conftest import ROOT, run_nas
from tests.test_export import run_clean

EXAMPLE = ROOT / "tests" / "data" / "convnext_t_sepc.yaml"
# Three stage outputs with odd sizes, so stride-2 convolutions give one row more than the next level.
LEVELS = [(4, 23, 35), (6, 12, 18), (10, 6, 9)]


def neck_cases():
    for tag, cls in sorted(CONFIGS["neck"].items()):
        for i, example in enumerate(cls.examples):
            yield pytest.param(tag, example, id=f"{tag}-{i}")


@pytest.mark.parametrize(("tag", "example"), list(neck_cases()))
def test_neck_matches_its_analytic_description(tag, example):
    config = CONFIGS["neck"][tag].model_validate({"type": tag, **example})
    shapes = [LEVELS[i] for i in config.in_stages]
    config.check_levels(shapes)
    torch.manual_seed(0)
    module = create("neck", config.model_dump(), in_chs=[s[0] for s in shapes]).eval()
    features = [torch.randn(1, *s) for s in shapes]
    with torch.no_grad():
        pyramid = module(features)
    assert [tuple(p.shape[1:]) for p in pyramid] == config.out_shapes(shapes)
    assert len(pyramid) == len(shapes) + config.extra_levels
    costs = config.level_costs(shapes)
    assert count_parameters(module) == sum(p for p, _ in costs) + config.shared_params(shapes)
    assert fvcore_flops(module, (features,)) == sum(f for _, f in costs)


def test_sepc_shares_its_pyramid_convolutions_and_normalises_levels_together():
    """One set of PConv kernels serves every level (the paper's scale-equalizing kernel), and iBN's training
    statistics come from all levels at once: the running mean is the mean over every level's positions."""
    config = CONFIGS["neck"]["sepc"](in_stages=[0, 1], out_channels=8, pconvs=1)
    module = create("neck", config.model_dump(), in_chs=[4, 6]).train()
    shapes = [(4, 8, 8), (6, 4, 4)]
    assert config.shared_params(shapes) == 3 * (9 * 8 * 8 + 8) + 2 * 8
    pconv = module.pconvs[0]
    levels = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4) + 5.0]
    with torch.no_grad():
        pre = [pconv.same(levels[0]) + torch.nn.functional.interpolate(
                   pconv.coarser(levels[1]), size=(8, 8), mode="bilinear", align_corners=False),
               pconv.same(levels[1]) + pconv.finer(levels[0])]
        pconv.norm.reset_running_stats()
        pconv.norm.momentum = 1.0  # the running mean becomes this batch's mean
        pconv(levels)
    together = torch.cat([p.permute(1, 0, 2, 3).reshape(8, -1) for p in pre], dim=1).mean(dim=1)
    assert torch.allclose(pconv.norm.running_mean, together, atol=1e-5)


SMALL = {
    "name": "small_neck",
    "input": {"resolution": [48, 80]},  # non-square: stage maps 12x20, 6x10, 3x5
    "num_classes": 10,
    "stem": {"type": "conv", "kernel": 4, "stride": 4},
    "defaults": {"norm": "layernorm", "downsample": {"type": "conv", "kernel": 2, "stride": 2}},
    "stages": [{"depth": 1, "width": 16, "block": {"mixer": {"type": "dwconv", "kernel": 3}}},
               {"depth": 1, "width": 24, "block": {"mixer": {"type": "window_attention", "window": 2,
                                                                "head_dim": 8}}},
               {"depth": 1, "width": 32, "block": {"mixer": {"type": "attention", "head_dim": 8}}}],
}


def with_neck(neck: dict | None, **changes) -> dict:
    return {**SMALL, **changes, **({"neck": neck} if neck else {})}


def test_a_genome_without_a_neck_keeps_its_canonical_form_and_hash():
    genome = load_genome("zoo:convnext_t")
    assert "neck" not in genome.to_dict()
    assert genome.content_hash() == "27a037a048648a41"  # its hash before necks existed (main at a871d8c)
    with_neck_genome = load_genome({**genome.to_dict(), "neck": {"type": "fpn", "in_stages": [1, 2, 3]}})
    assert with_neck_genome.to_dict()["neck"]["type"] == "fpn"
    assert with_neck_genome.content_hash() != genome.content_hash()
    assert load_genome(with_neck_genome.to_dict()) == with_neck_genome  # the canonical form round-trips


@pytest.mark.parametrize("tag", ["fpn", "pafpn", "sepc"])
def test_compiled_neck_costs_equal_fvcore_at_a_non_square_size(tag):
    neck = {"type": tag, "in_stages": [0, 1, 2], "out_channels": 16, "extra_levels": 1}
    genome = load_genome(with_neck(neck))
    graph = build_graph(genome)
    levels = [d for _, d in graph.nodes(data=True) if d["role"] == "neck"]
    model = compile_model(genome, seed=0, features_only=True).eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        pyramid = model(x)
    outs = [d["out_shape"] for n, d in graph.nodes(data=True) if n.startswith("neck.levels")]
    assert [tuple(p.shape[1:]) for p in pyramid] == outs == [(16, 12, 20), (16, 6, 10), (16, 3, 5), (16, 2, 3)]
    assert count_parameters(model.neck) == sum(d["params"] for d in levels)
    counted = fvcore_by_module(model, x)
    assert counted["neck"] == sum(d["flops"] for d in levels)
    backbone = [d for _, d in graph.nodes(data=True) if d["role"] not in ("input", "head", "neck")]
    assert counted[""] - counted["neck"] == sum(d["flops"] for d in backbone)
    # the classifier path keeps working beside the neck, and the full model counts every weight
    full = compile_model(genome, seed=0).eval()
    with torch.no_grad():
        assert full(x).shape == (1, 10)
        assert [p.shape for p in full.forward_pyramid(x)] == [p.shape for p in pyramid]
    assert count_parameters(full) == analytic_cost(genome).params


@pytest.mark.parametrize(("neck", "path", "words"), [
    ({"type": "fpn", "in_stages": [1, 3]}, "neck.in_stages[1]", "3: the genome has 3 stages"),
    ({"type": "fpn", "in_stages": [2, 1]}, "neck.in_stages", "finest (lowest index) first"),
    ({"type": "sepc", "in_stages": [0, 1], "pconvs": 0}, "neck.pconvs", "greater than 0"),
    ({"type": "fpn", "in_stages": [0], "extra": "deform"}, "neck.extra", "'conv_input' or 'conv_output'"),
])
def test_bad_necks_name_their_yaml_path(neck, path, words):
    with pytest.raises(GenomeError) as err:
        load_genome(with_neck(neck))
    assert path in str(err.value) and words in str(err.value)


def test_a_bottom_up_neck_needs_each_level_at_half_the_size_of_the_one_before():
    """PAFPN's and SEPC's stride-2 paths cannot join two stages at one size (the last stage here keeps its
    map); FPN's top-down path resizes to any size."""
    stages = [*SMALL["stages"][:2], {"depth": 1, "width": 24, "downsample": None, "block": {"mixer": "pooling"}}]
    for tag in ("pafpn", "sepc"):
        with pytest.raises(GenomeError, match=r"neck\.in_stages\[2\].*half the size.*6x10 map follows a 6x10"):
            load_genome(with_neck({"type": tag, "in_stages": [0, 1, 2]}, stages=stages))
    load_genome(with_neck({"type": "fpn", "in_stages": [0, 1, 2]}, stages=stages))


def test_the_sepc_detector_validates_and_profiles_at_800x1333():
    """Analytic only, no forward pass: the backbone per stage and the neck per level."""
    genome = load_genome(EXAMPLE)
    assert genome.input.resolution == (800, 1333)
    report = profile(genome)
    rows = {row["name"]: row for row in report["parts"]}
    levels = [rows[f"neck.levels[{k}]"]["out_shape"] for k in range(5)]
    assert levels == report["neck"]["levels"] == [[256, 100, 166], [256, 50, 83], [256, 25, 41], [256, 13, 21],
                                                  [256, 7, 11]]
    assert rows["stages[3]"]["out_shape"] == [768, 25, 41]
    neck = sum(row["flops"] for name, row in rows.items() if name.startswith("neck"))
    assert neck == report["neck"]["flops"] and rows["neck.shared"]["flops"] == 0
    assert report["backbone"]["flops"] + neck + rows["head"]["flops"] == report["total"]["flops"]
    assert report["neck"]["params"] + report["backbone"]["params"] + rows["head"]["params"] == \
        report["total"]["params"]
    assert rows["neck.shared"]["params"] == 4 * (3 * (9 * 256 * 256 + 256) + 2 * 256)  # four PConvs with iBN


def test_window_and_head_constraints_are_checked_at_the_detection_resolution():
    """Swin-T's 7x7 windows tile 224's 56x56 map, not 800x1333's 200x333: the error names the window."""
    data = load_genome("zoo:swin_t").to_dict()
    data["input"]["resolution"] = [800, 1333]
    with pytest.raises(GenomeError, match=r"stages\[0\]\.pattern\[0\]\.mixer\.window.*200x333"):
        load_genome(data)
    result = run_nas("profile", "zoo:swin_t", "--resolution", "800x1333")
    assert result.returncode == 2 and "stages[0].pattern[0].mixer.window" in result.stderr


def test_profile_cli_reports_the_neck_per_level_with_fvcore(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(with_neck({"type": "sepc", "in_stages": [0, 1, 2], "out_channels": 16,
                                              "pconvs": 2})))
    result = run_nas("profile", path, "--fvcore")
    assert result.returncode == 0, result.stderr
    assert "neck.levels[2]" in result.stdout and "neck.shared" in result.stdout
    assert "analytic vs fvcore: +0.000%" in result.stdout
    report = json.loads(run_nas("profile", path, "--fvcore", "--json").stdout)
    assert report["neck"]["fvcore_flops"] == report["neck"]["flops"]
    assert report["backbone"]["fvcore_flops"] == report["backbone"]["flops"]


def test_features_only_export_returns_the_pyramid_standalone(tmp_path: Path):
    path, model_py, weights, out = (tmp_path / name for name in ("g.yaml", "model.py", "w.pt", "out.pt"))
    path.write_text(yaml.safe_dump(with_neck({"type": "sepc", "in_stages": [0, 1, 2], "out_channels": 16,
                                              "extra_levels": 1, "pconvs": 2})))
    result = run_nas("compile", path, "--features-only", "-o", model_py, "--weights", weights)
    assert result.returncode == 0, result.stderr
    assert "returns the neck's pyramid" in result.stdout
    clean = run_clean(model_py, weights, out, "3,48,80")  # model.py alone, in a clean interpreter
    assert clean.returncode == 0, clean.stderr
    saved = torch.load(out, weights_only=True)
    model = compile_model(path, features_only=True).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))  # no classifier weights in a features-only file
    with torch.inference_mode():
        expected = model(saved["x"])
    assert len(saved["y"]) == len(expected) == 4  # the pyramid
    for got, want in zip(saved["y"], expected):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_a_search_with_a_neck_runs_and_its_budget_counts_the_neck(tmp_path: Path):
    """A space at a non-square size choosing the SEPC neck's width: every trial's FLOPs include the neck, and a
    budget the backbone meets alone, but with no neck, stops the search before any trial."""
    space = with_neck({"type": "sepc", "in_stages": [0, 1, 2], "out_channels": {"choice": [8, 16]}, "pconvs": 1})
    genomes = []
    for width in (8, 16):
        genome = json.loads(json.dumps(space))
        genome["neck"]["out_channels"] = width
        genomes.append(load_genome(genome))
    cost = {g.content_hash(): analytic_cost(g).flops for g in genomes}
    backbone = analytic_cost(load_genome(SMALL)).flops
    assert min(cost.values()) > backbone
    built = []

    def score(genome, model) -> float:
        assert model.neck is not None
        built.append(genome.content_hash())
        return float(genome.neck.out_channels)

    result = nas.search(space, budget=None, trials=3, sampler="random", seed=0, second="flops", evaluate=score,
                        out=tmp_path / "run", quiet=True)
    assert set(built) == set(cost)
    assert result.pareto and all(p.flops == cost[p.genome.content_hash()] for p in result.pareto)
    with pytest.raises(InfeasibleBudget):
        nas.search(space, budget=str(backbone + 1), trials=2, sampler="random", evaluate=score,
                   out=tmp_path / "tight", quiet=True)
    assert len(built) == 2
