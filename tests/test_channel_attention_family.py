"""DaViT's parts: channel group attention (blocks/channel_attention.py) and the MetaFormer block with conv
position encodings (blocks/conv_pos_enc.py), against naive re-statements of the paper, with hand-counted costs,
the errors a genome author sees, and both as choices of a small search space.

Every module takes and returns channels-last maps (B, H, W, C).
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, create
from nas import compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.network import count_parameters
from nas.space import choices, instantiate, random_picker
from tests.conftest import assert_edit_is_named, assert_supernet_computes_what_it_extracts

DIM, SIZE = 8, (4, 4)


def build(role: str, config: dict, dim: int = DIM, size=SIZE):
    config = CONFIGS[role][config["type"]].model_validate(config)
    torch.manual_seed(0)
    return config, create(role, config.model_dump(), dim=dim, size=size).eval()


def naive_channel_attention(module, x):
    """DaViT's ChannelAttention per image and head: A = softmax(k^T v / sqrt(d)) over the head's d channels,
    output (A q^T)^T, then proj."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    out = []
    for image in tokens:
        q, k, v = module.qkv(image).chunk(3, dim=-1)  # (N, inner) each
        heads = []
        for i in range(module.heads):
            part = slice(i * module.head_dim, (i + 1) * module.head_dim)
            scores = (k[:, part].T @ v[:, part]) / module.head_dim**0.5  # (d, d)
            heads.append((scores.softmax(-1) @ q[:, part].T).T)  # (N, d)
        out.append(module.proj(torch.cat(heads, dim=-1)))
    return torch.stack(out).reshape(b, h, w, c)


def test_channel_attention_is_softmax_of_k_transpose_v_applied_to_q():
    _, module = build("mixer", {"type": "channel_attention", "heads": 2})
    x = torch.randn(2, *SIZE, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(x), naive_channel_attention(module, x))


def test_channel_attention_sees_the_whole_map():
    """Unlike window attention, one far-away token changes every output token: its score matrix sums over all."""
    _, module = build("mixer", {"type": "channel_attention", "heads": 2}, size=(8, 8))
    x = torch.randn(1, 8, 8, DIM)
    moved = x.clone()
    moved[0, 7, 7] += 1.0
    with torch.no_grad():
        assert not torch.allclose(module(x)[0, 0, 0], module(moved)[0, 0, 0])


def test_channel_attention_costs_by_hand():
    config, module = build("mixer", {"type": "channel_attention", "heads": 2})  # head_dim 4
    shape = (DIM, *SIZE)
    # qkv 8 x 24 + 24 biases, proj 8 x 8 + 8 biases
    assert config.params(shape, DIM) == count_parameters(module) == 192 + 24 + 64 + 8
    # 16 tokens x (qkv 8 x 24 + proj 8 x 8) MACs, then k^T v and A q^T: 16 x 4 x 4 per head and product
    assert config.flops(shape, DIM) == 16 * (192 + 64) + 2 * 2 * 16 * 4 * 4 == 5120
    assert fvcore_flops(module, torch.randn(1, *SIZE, DIM)) == 5120


def test_cpe_block_encodes_position_before_each_sub_block():
    """x + dwconv(x), then norm -> mixer -> residual; again x + dwconv(x), then norm -> MLP -> residual."""
    _, block = build("block", {"type": "cpe_metaformer", "mixer": {"type": "channel_attention", "heads": 2}})
    x = torch.randn(2, *SIZE, DIM)

    def encode(cpe, x):
        conv = cpe.proj
        return x + F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1, groups=DIM).permute(0, 2, 3, 1)

    with torch.no_grad():
        y = encode(block.cpe1, x)
        y = y + block.mixer(F.layer_norm(y, (DIM,), block.norm1.weight, block.norm1.bias, 1e-6))
        y = encode(block.cpe2, y)
        y = y + block.mlp(F.layer_norm(y, (DIM,), block.norm2.weight, block.norm2.bias, 1e-6))
        torch.testing.assert_close(block(x), y)


def test_cpe_block_costs_the_metaformer_block_plus_two_depthwise_convs():
    shape = (DIM, *SIZE)
    mixer = {"type": "window_attention", "window": 2, "rel_pos": False, "heads": 2}
    plain = CONFIGS["block"]["metaformer"](mixer=mixer)
    config, block = build("block", {"type": "cpe_metaformer", "mixer": mixer})
    # two 3x3 depthwise convs with biases: 2 x 8 x (9 + 1) parameters, 2 x 16 x 8 x 9 MACs
    assert config.params(shape, DIM) - plain.params(shape, DIM) == 160
    assert config.flops(shape, DIM) - plain.flops(shape, DIM) == 2304
    assert count_parameters(block) == config.params(shape, DIM)
    assert fvcore_flops(block, torch.randn(1, *SIZE, DIM)) == config.flops(shape, DIM)
    # without a channel mixer there is one sub-block, and one position encoding
    alone = CONFIGS["block"]["cpe_metaformer"](mixer=mixer, mlp=None)
    assert alone.params(shape, DIM) - CONFIGS["block"]["metaformer"](mixer=mixer, mlp=None).params(shape, DIM) == 80


GENOME = """\
stem: {type: conv, kernel: 4, stride: 4}
input: {resolution: 32}
num_classes: 5
stages:
  - depth: 2
    width: 48
    pattern: [{type: cpe_metaformer, mixer: {type: window_attention, window: 4, rel_pos: false, heads: 3}},
              {type: cpe_metaformer, mixer: {type: channel_attention, heads: 3}}]
"""


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("channel_attention, heads: 3", "channel_attention, heads: 5"), "stages[0].pattern[1].mixer.heads",
     "5 does not divide width 48"),
    (("heads: 3}}", "heads: 3}, pos_kernel: 4}"), "stages[0].pattern[0].pos_kernel", "must be odd"),
])
def test_bad_input_names_the_yaml_path(tmp_path, edit, path, words):
    assert_edit_is_named(GENOME, edit, path, words, tmp_path)


SPACE = {
    "input": {"resolution": 32}, "num_classes": 5, "stem": {"type": "conv", "kernel": 4, "stride": 4},
    "stages": [{"depth": {"int": [1, 2]}, "width": 32, "block": {
        "type": "cpe_metaformer",
        "mixer": {"choice": [{"type": "channel_attention", "head_dim": {"choice": [8, 16]}},
                             {"type": "window_attention", "window": 4, "rel_pos": False}, "pooling"]}}}],
}


def test_channel_attention_is_a_search_space_choice():
    assert [c.path for c in choices(SPACE)] == ["stages[0].depth", "stages[0].block.mixer",
                                                "stages[0].block.mixer.choice[0].head_dim"]
    genome = load_genome(instantiate(SPACE, random_picker(random.Random(0), {"stages[0].block.mixer": 0})))
    mixer = genome.stages[0].block.mixer
    assert genome.stages[0].block.type == "cpe_metaformer" and mixer.type == "channel_attention"
    model = compile_model(genome, seed=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_a_supernet_shares_weights_across_the_choices_and_extracts_what_it_runs():
    genome = load_genome(instantiate(SPACE, random_picker(random.Random(1), {"stages[0].block.mixer": 0})))
    assert_supernet_computes_what_it_extracts(SPACE, [genome], torch.randn(2, 3, 32, 32), samples=8)
