"""CvT's convolutional projection attention (``conv_attention``) and the class token of a stage
(``class_token: true``) against a naive restatement of the authors' code, a parameter and FLOP count worked by
hand, the YAML path of a bad field, and the mixer as a search-space choice beside SpectFormer's
spectral-then-attention pattern.

The mixer takes and returns channels-last maps (B, H, W, C); ``create("mixer", cfg, dim=, size=)`` builds it.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, create
from nas import GenomeError, analytic_cost, compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.io import parse_yaml
from nas.network import count_parameters
from nas.space import check_space, instantiate, random_picker
from nas.supernet import sample_genome
from tests.conftest import assert_edit_is_named, assert_supernet_computes_what_it_extracts


def build(dim=8, size=(4, 4), **fields):
    config = CONFIGS["mixer"]["conv_attention"].model_validate({"type": "conv_attention", **fields})
    torch.manual_seed(0)
    module = create("mixer", config.model_dump(), dim=dim, size=size).eval()
    with torch.no_grad():  # BatchNorm at its init is the identity: give it statistics and an affine map
        for conv in (module.conv_q, module.conv_k, module.conv_v):
            bn = conv[1]
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    return config, module


def naive_cvt_attention(m, x, stride, scale, cls_token=None):
    """CvT's Attention.forward_conv and forward as the authors write them: NCHW depthwise conv, BatchNorm,
    flatten to tokens, the (B, 1, C) class token (if any) put in front, linear, split heads,
    softmax(q k^T * scale) v, merge heads, linear. Returns (B, tokens, C)."""
    b, h, w, c = x.shape
    xc = x.permute(0, 3, 1, 2)

    def tokens(conv, linear, s):
        y = F.conv2d(xc, conv[0].weight, stride=s, padding=1, groups=c)
        bn = conv[1]
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        y = y.flatten(2).transpose(1, 2)
        y = linear(y if cls_token is None else torch.cat((cls_token, y), dim=1))
        return y.reshape(b, y.shape[1], m.heads, -1).transpose(1, 2)

    q, k, v = tokens(m.conv_q, m.proj_q, 1), tokens(m.conv_k, m.proj_k, stride), tokens(m.conv_v, m.proj_v, stride)
    attn = torch.softmax(torch.einsum("bhld,bhtd->bhlt", q, k) * scale, dim=-1)
    y = torch.einsum("bhlt,bhtd->bhld", attn, v).transpose(1, 2)
    return m.proj(y.reshape(b, y.shape[1], -1))


@pytest.mark.parametrize(("stride", "qk_scale"), [(2, "width"), (1, "width"), (2, "head")])
def test_conv_attention_equals_the_authors_formulation(stride, qk_scale):
    _, m = build(dim=8, size=(6, 6), heads=2, kv_stride=stride, qk_scale=qk_scale)
    x = torch.randn(2, 6, 6, 8)
    scale = 8**-0.5 if qk_scale == "width" else 4**-0.5  # CvT: dim_out ** -0.5; usual: head_dim ** -0.5
    with torch.no_grad():
        y = m(x)
        assert y.shape == x.shape  # the map keeps its size and width
        torch.testing.assert_close(y, naive_cvt_attention(m, x, stride, scale).reshape(x.shape), atol=1e-5,
                                   rtol=1e-5)


def test_a_class_token_skips_the_convs_and_leads_q_k_and_v():
    _, m = build(dim=8, size=(6, 6), heads=2)
    x, token = torch.randn(2, 6, 6, 8), torch.randn(2, 1, 1, 8)
    with torch.no_grad():
        y = m(x, token)
        assert y.shape == (2, 1, 1 + 36, 8)  # token first, then the map's tokens
        expected = naive_cvt_attention(m, x, 2, 8**-0.5, cls_token=token[:, 0])
        torch.testing.assert_close(y[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_keys_and_values_come_from_the_strided_map():
    """A 7x7 map at kv_stride 2 (padding 1, kernel 3) gives 4x4 = 16 keys for its 49 queries."""
    config, m = build(dim=8, size=(7, 7), heads=2)
    assert config.keys((8, 7, 7)) == 16
    x = torch.randn(1, 7, 7, 8)
    assert m.project(x.permute(0, 3, 1, 2), m.conv_k, m.proj_k).shape == (1, 2, 16, 4)


def test_params_and_flops_worked_by_hand():
    """Width 8, 2 heads, a 4x4 map, 3x3 convs, keys at stride 2: a 2x2 key map (4 keys, 16 queries).

    params: 3 depthwise convs + BNs 3 * (8*9 + 2*8) = 264; proj_q, proj_k, proj_v 3 * (8*8 + 8) = 216;
    proj 8*8 + 8 = 72: 552.
    FLOPs: q conv + BN 16 * 8 * (9 + 2) = 1408; k and v 2 * 4 * 8 * 11 = 704; proj_q and proj 2 * 16 * 64 = 2048;
    proj_k and proj_v 2 * 4 * 64 = 512; q k^T and attn v 2 * 16 * 4 * 8 = 1024: 5696."""
    config, m = build(dim=8, size=(4, 4), heads=2)
    shape = (8, 4, 4)
    assert config.params(shape, 8) == count_parameters(m) == 552
    assert config.flops(shape, 8) == fvcore_flops(m, torch.randn(1, 4, 4, 8)) == 5696


GENOME = """\
input: {resolution: 32}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
stages:
  - {depth: 2, width: 64, block: {mixer: {type: conv_attention, heads: 2}, mlp: {act: quick_gelu}}}
"""


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("heads: 2", "heads: 5"), "stages[0].block.mixer.heads", "5 does not divide width 64"),
    (("heads: 2", "heads: 2, kernel: 4"), "stages[0].block.mixer.kernel", "must be odd"),
    (("heads: 2", "heads: 2, kv_stride: 0"), "stages[0].block.mixer.kv_stride", "greater than 0"),
    (("heads: 2", "heads: 2, qk_scale: dim"), "stages[0].block.mixer.qk_scale", "'width' or 'head'"),
])
def test_a_bad_field_is_named_by_its_yaml_path(tmp_path, edit, path, words):
    assert_edit_is_named(GENOME, edit, path, words, tmp_path)


CLASS_TOKEN = """\
input: {resolution: 32}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
defaults: {norm: layernorm, downsample: {type: conv, kernel: 3, stride: 2, padding: 1, post_norm: layernorm}}
stages:
  - {depth: 1, width: 16, block: {mixer: {type: conv_attention, heads: 1}}}
  - {depth: 2, width: 32, class_token: true, block: {mixer: {type: conv_attention, heads: 2}}}
head: {type: linear, norm: layernorm}
"""


def test_a_class_token_stage_costs_what_it_runs_and_the_head_reads_the_token():
    """The token's 32 parameters and its share of every block's FLOPs are in the analytic count; the final
    features are the token as a 1x1 map, which the head classifies; the stage outputs stay maps."""
    genome = load_genome(parse_yaml(CLASS_TOKEN))
    cost = analytic_cost(genome)
    plain = analytic_cost(load_genome(parse_yaml(CLASS_TOKEN.replace("class_token: true, ", ""))))
    model = compile_model(genome, seed=0).eval()
    assert count_parameters(model) == cost.params == plain.params + 32
    assert model.stages[1].class_token.shape == (1, 1, 1, 32)
    x = torch.randn(2, 3, 32, 32)
    assert fvcore_flops(model, x[:1]) == cost.flops > plain.flops
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 32, 1, 1)
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert [f.shape[1:] for f in model.forward_intermediates(x, intermediates_only=True)] == [(16, 8, 8),
                                                                                                (32, 4, 4)]


@pytest.mark.parametrize(("edit", "path", "words"), [
    (("width: 16, block", "width: 16, class_token: true, block"), "stages[0].class_token", "only the last stage"),
    (("heads: 2}}", "heads: 2}, mlp: {type: convffn}}"), "stages[1].block", "cannot take the stage's class token"),
    (("type: conv_attention, heads: 2", "type: attention, heads: 2"), "stages[1].block", "(conv_attention)"),
])
def test_a_class_token_where_it_cannot_go_is_named_by_its_yaml_path(edit, path, words):
    with pytest.raises(GenomeError) as info:
        load_genome(parse_yaml(CLASS_TOKEN.replace(*edit)))
    assert info.value.path == path and words in str(info.value)


SPACE = """\
input: {resolution: 32}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
stages:
  - depth: 2
    width: 32
    pattern:
      - {type: gfnet, mixer: global_filter}
      - mixer: {choice: [{type: conv_attention, heads: {choice: [1, 2]}, kv_stride: {choice: [1, 2]}},
                         {type: attention, heads: 2}]}
  - depth: {int: [1, 2]}
    width: 64
    downsample: {type: conv, kernel: 3, stride: 2, padding: 1, post_norm: layernorm}
    block: {mixer: {choice: [{type: conv_attention, heads: 2}, global_filter]}}
"""


def test_conv_attention_is_a_search_space_choice():
    """A SpectFormer-like stage (spectral layer, then attention) whose attention may be CvT's, and a CvT-like
    stage: every sampled genome validates, costs what its compiled model has, and trains a step."""
    space = parse_yaml(SPACE)
    report = check_space(space, samples=4, seed=0)
    assert report.valid == report.sampled
    rng, mixers = random.Random(0), set()
    for _ in range(4):
        genome = load_genome(instantiate(space, random_picker(rng)))
        mixers |= {b.mixer.type for s in genome.stages for b in s.blocks()}
        model = compile_model(genome, seed=0)
        assert count_parameters(model) == analytic_cost(genome).params
        model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    assert {"conv_attention", "global_filter"} <= mixers


def test_a_supernet_over_conv_attention_and_a_class_token_extracts_what_it_computes():
    """Heads and depth vary under one set of weights, the class token included: each extracted network
    computes what the supernet computes for its genome."""
    space = parse_yaml(CLASS_TOKEN.replace("depth: 2, width: 32", "depth: {int: [1, 2]}, width: 32")
                       .replace("heads: 2}", "heads: {choice: [1, 2]}}"))
    rng = random.Random(0)
    genomes = [sample_genome(space, rng) for _ in range(3)]
    assert_supernet_computes_what_it_extracts(space, genomes, torch.randn(1, 3, 32, 32))
