"""MogaNet's multi-order gated aggregation and channel aggregation FFN (blocks/gated_aggregation.py) against
naive NCHW re-statements of the paper's modules, with hand-counted costs, the errors a genome author sees, and
both as choices of a small search space.

Every module takes and returns channels-last maps (B, H, W, C); the papers' 1x1 convs are linear layers here.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, create
from blocks.gated_aggregation import order_widths
from nas import compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.network import count_parameters
from nas.space import choices, instantiate, random_picker
from tests.conftest import assert_edit_is_named, assert_supernet_computes_what_it_extracts

DIM, SIZE = 8, (4, 4)


def build(role: str, config: dict, dim: int = DIM, size=SIZE):
    config = CONFIGS[role][config["type"]].model_validate(config)
    torch.manual_seed(0)
    module = create(role, config.model_dump(), dim=dim, size=size).eval()
    with torch.no_grad():  # sigma starts at 1e-5: give it weight, so the decomposition shows in the output
        for p in module.parameters():
            if p.ndim == 1:
                p.normal_()
    return config, module


def pointwise(x, linear):
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


def depthwise(x, conv):
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, groups=x.shape[1])


def test_orders_split_the_channels_one_three_four():
    assert order_widths(16, (1, 3, 4)) == (2, 6, 8)
    assert order_widths(256, (1, 3, 4)) == (32, 96, 128)


def test_gated_aggregation_is_silu_gate_times_multi_order_value():
    _, m = build("mixer", {"type": "gated_aggregation"}, dim=16, size=(8, 8))
    x = torch.randn(2, 8, 8, 16)
    xc = x.permute(0, 3, 1, 2)
    sigma = m.sigma.scale[None, :, None, None]
    y = pointwise(xc, m.proj_1)
    y = F.silu(y + sigma * (y - y.mean((2, 3), keepdim=True)))  # feature decomposition
    gate = pointwise(y, m.gate)
    base = depthwise(y, m.dw_conv0)  # 5x5
    assert (m.dw_conv1.kernel_size, m.dw_conv1.dilation, m.dw_conv2.kernel_size, m.dw_conv2.dilation) == \
        ((5, 5), (2, 2), (7, 7), (3, 3))
    value = torch.cat([base[:, :2], depthwise(base[:, 2:8], m.dw_conv1), depthwise(base[:, 8:], m.dw_conv2)], 1)
    value = pointwise(value, m.pw_conv)
    expected = pointwise(F.silu(gate) * F.silu(value), m.proj_2) + xc
    with torch.no_grad():
        torch.testing.assert_close(m(x).permute(0, 3, 1, 2), expected)


def test_channel_aggregation_reweights_by_the_difference_from_a_one_channel_summary():
    _, m = build("mlp", {"type": "channel_aggregation", "ratio": 2})
    x = torch.randn(2, *SIZE, DIM)
    xc = x.permute(0, 3, 1, 2)
    y = F.gelu(depthwise(pointwise(xc, m.fc1), m.dwconv))
    y = y + m.sigma.scale[None, :, None, None] * (y - F.gelu(pointwise(y, m.decompose)))
    with torch.no_grad():
        torch.testing.assert_close(m(x).permute(0, 3, 1, 2), pointwise(y, m.fc2))


def test_costs_by_hand():
    shape, x = (DIM, *SIZE), torch.randn(1, *SIZE, DIM)
    config, m = build("mixer", {"type": "gated_aggregation"})  # orders of 1, 3 and 4 channels
    # four 8x8 linears; depthwise 5x5 over 8, 5x5 over 3, 7x7 over 4 channels: 727 weights and MACs per pixel
    per_pixel = 4 * 64 + 8 * 25 + 3 * 25 + 4 * 49
    assert per_pixel == 727
    assert config.params(shape, DIM) == count_parameters(m) == 727 + 4 * 8 + (8 + 3 + 4) + 8  # biases, sigma
    assert config.flops(shape, DIM) == fvcore_flops(m, x) == 16 * (727 + 8)  # + the mean, one per element
    config, m = build("mlp", {"type": "channel_aggregation", "ratio": 2})  # hidden 16
    # fc1 8x16, 3x3 depthwise over 16, decompose 16x1, fc2 16x8
    assert config.params(shape, DIM) == count_parameters(m) == 16 * (8 + 9 + 1 + 8) + (16 + 16 + 1 + 8) + 16
    assert config.flops(shape, DIM) == fvcore_flops(m, x) == 16 * 16 * (8 + 9 + 1 + 8)


GENOME = """\
stem: {type: conv, kernel: 4, stride: 4}
input: {resolution: 32}
num_classes: 5
defaults: {norm: batchnorm, layer_scale: 1.0e-5}
stages:
  - {depth: 2, width: 32, block: {mixer: {type: gated_aggregation}, mlp: {type: channel_aggregation, ratio: 4}}}
"""


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("width: 32", "width: 36"), "stages[0].block.mixer.split", "its sum 8 does not divide width 36"),
    (("{type: gated_aggregation}", "{type: gated_aggregation, kernels: [5, 4, 7]}"),
     "stages[0].block.mixer.kernels[1]", "must be odd"),
    (("ratio: 4", "ratio: 0.01"), "stages[0].block.mlp.ratio", "leaves no hidden channel"),
])
def test_bad_input_names_the_yaml_path(tmp_path, edit, path, words):
    assert_edit_is_named(GENOME, edit, path, words, tmp_path)


SPACE = {
    "input": {"resolution": 32}, "num_classes": 5, "stem": {"type": "conv", "kernel": 4, "stride": 4},
    "stages": [{"depth": {"int": [1, 2]}, "width": {"choice": [32, 48]}, "block": {
        "mixer": {"choice": [{"type": "gated_aggregation", "dilations": {"choice": [[1, 2, 3], [1, 1, 1]]}},
                             {"type": "dwconv"}]},
        "mlp": {"choice": [{"type": "channel_aggregation", "ratio": {"choice": [4, 8]}}, "mlp"]}}}],
}


def test_gated_aggregation_is_a_search_space_choice():
    paths = [c.path for c in choices(SPACE)]
    assert "stages[0].block.mixer" in paths and "stages[0].block.mlp.choice[0].ratio" in paths
    forced = {"stages[0].block.mixer": 0, "stages[0].block.mlp": 0}
    genome = load_genome(instantiate(SPACE, random_picker(random.Random(0), forced)))
    block = genome.stages[0].block
    assert (block.mixer.type, block.mlp.type) == ("gated_aggregation", "channel_aggregation")
    model = compile_model(genome, seed=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_a_supernet_shares_weights_across_the_choices_and_extracts_what_it_runs():
    genome = load_genome(instantiate(SPACE, random_picker(random.Random(1), {"stages[0].block.mixer": 0,
                                                                             "stages[0].block.mlp": 0})))
    assert_supernet_computes_what_it_extracts(SPACE, [genome], torch.randn(2, 3, 32, 32), samples=8)
