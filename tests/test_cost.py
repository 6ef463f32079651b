"""Analytic cost: per stage, memory, budgets, and agreement with fvcore on random genomes of every space."""
from __future__ import annotations

import random

import pytest
import torch

from nas import InputError, compile_model, load_genome
from nas.cost import analytic_cost, parse_flops, parse_latency_ms, parse_params, peak_memory_estimate, stage_costs
from nas.cost.analytic import ZERO
from nas.cost.fvcore import fvcore_by_module
from nas.io import data_dir, read_yaml
from nas.space import instantiate, random_picker

SPACES = sorted(p.stem for p in data_dir().glob("*.yaml"))


@pytest.mark.parametrize(("text", "value"), [("4GFLOPs", 4e9), ("4.5G", 4.5e9), ("800MFLOPs", 8e8), ("4e9", 4e9),
                                             ("4.1 GMACs", 4.1e9), ("250M", 2.5e8)])
def test_flops_budgets_parse_as_written(text, value):
    assert parse_flops(text) == value


def test_param_and_latency_budgets_parse_as_written():
    assert parse_params("30M") == parse_params("30Mparams") == parse_params("3e7") == 30_000_000
    assert parse_latency_ms("10ms") == parse_latency_ms("10") == 10.0
    assert parse_latency_ms("0.5s") == 500.0 and parse_latency_ms("800us") == pytest.approx(0.8)


@pytest.mark.parametrize(("parse", "text"), [(parse_flops, "4 gigaflops"), (parse_flops, "-3G"),
                                             (parse_flops, "G"), (parse_params, "30MFLOPs"),
                                             (parse_latency_ms, "10 minutes"), (parse_latency_ms, "0ms")])
def test_unreadable_budgets_are_clear_errors(parse, text):
    with pytest.raises(InputError, match="budget"):
        parse(text)


def test_stage_costs_add_up_and_match_fvcore_per_stage():
    genome = load_genome("zoo:caformer_s18")
    parts = stage_costs(genome)
    assert [p.name for p in parts] == ["stem", "stages[0]", "stages[1]", "stages[2]", "stages[3]", "head"]
    assert [p.blocks for p in parts] == [0, 3, 3, 9, 3, 0]
    assert parts[3].out_shape == (320, 14, 14)
    assert sum((p.cost for p in parts), ZERO) == analytic_cost(genome)
    counted = fvcore_by_module(compile_model(genome), torch.randn(1, 3, 224, 224))
    modules = ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert [p.cost.flops for p in parts] == [counted[m] for m in modules]


def test_memory_estimate_grows_with_batch_and_dtype():
    genome = load_genome("zoo:deit_s")
    one, many = peak_memory_estimate(genome, 1), peak_memory_estimate(genome, 32)
    weights = analytic_cost(genome).params * 4
    assert weights < one < many
    # attention scores dominate: 6 heads x 196 x 196 per image, plus q, k, v
    assert many - one == 31 * 4 * (2 * 196 * 384 + 3 * 196 * 384 + 6 * 196 * 196)
    assert peak_memory_estimate(genome, 32, "bfloat16") * 2 == many


@pytest.mark.parametrize("space", SPACES)
def test_analytic_flops_equal_fvcore_on_random_genomes(space):
    data, _, _ = read_yaml(space)
    rng = random.Random(7)
    checked = 0
    while checked < 4:
        candidate = instantiate(data, random_picker(rng))
        try:
            genome = load_genome(candidate)
        except InputError:
            continue  # a genome the search would skip
        model = compile_model(genome)
        res = genome.input.resolution
        counted = fvcore_by_module(model, torch.randn(1, genome.input.channels, *res))[""]
        assert analytic_cost(genome).flops == pytest.approx(counted, rel=0.005)
        assert sum(p.numel() for p in model.parameters()) == analytic_cost(genome).params
        checked += 1


def test_what_fvcore_cannot_count_is_zero_in_both_counts():
    """fvcore has no handle for average pooling or element-wise ops (activations, residual adds); the
    convention follows it and counts them as zero, so PoolFormer's pooling costs nothing in either count."""
    from fvcore.nn import FlopCountAnalysis

    genome = load_genome("zoo:poolformerv2_s12")
    analysis = FlopCountAnalysis(compile_model(genome).eval(), torch.randn(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() == analytic_cost(genome).flops
    assert {"aten::avg_pool2d", "aten::add", "aten::sub"} <= set(analysis.unsupported_ops())
    assert analysis.by_module()["stages.0.blocks.0.mixer"] == genome.stages[0].block.mixer.flops((64, 56, 56), 64) == 0
