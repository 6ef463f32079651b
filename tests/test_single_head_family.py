"""SHViT's family (blocks/single_head.py): single-head attention on a channel split, the conv-BN block, the
downsample and the patchify stem, on small maps."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
import yaml

from blocks import CONFIGS, create
from nas import GenomeError, compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.io import parse_yaml
from nas.network import count_parameters
from nas.space import instantiate, random_picker
from tests.conftest import assert_supernet_computes_what_it_extracts, run_nas


def single_head(dim, size, **fields):
    config = CONFIGS["mixer"]["single_head_attention"].model_validate({"type": "single_head_attention", **fields})
    torch.manual_seed(0)
    return config, create("mixer", config.model_dump(), dim=dim, size=size).eval()


def test_single_head_attention_attends_over_the_split_and_passes_the_rest():
    """The paper's SHSA, restated on NCHW: norm and attend over the first p channels, keep the others, then
    ReLU and a 1x1 conv-BN over all of them."""
    _, m = single_head(12, (3, 5), qk_dim=4, partial_dim=5)
    for bn in (m.to_qkv[1], m.proj[1]):  # non-trivial BatchNorm statistics, so the test sees them
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 5, 12)
    xc = x.permute(0, 3, 1, 2)
    attended, passed = xc[:, :5], xc[:, 5:]
    qkv = m.to_qkv(F.group_norm(attended, 1, m.pre_norm.weight, m.pre_norm.bias)).flatten(2)  # (B, 13, N)
    q, k, v = qkv[:, :4], qkv[:, 4:8], qkv[:, 8:]
    scores = (q.transpose(1, 2) @ k / 4**0.5).softmax(-1)  # (B, N, N): one head
    attended = (v @ scores.transpose(1, 2)).reshape(2, 5, 3, 5)
    expected = m.proj(torch.relu(torch.cat((attended, passed), 1))).permute(0, 2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected)


def test_single_head_attention_cost_by_hand():
    """Width 8, qk 2, over 4 channels, on a 2x2 map (N = 4 tokens)."""
    config, m = single_head(8, (2, 2), qk_dim=2, partial_dim=4)
    # GroupNorm 2*4; q, k, v conv 4 -> 8 plus its BN 2*8; proj conv 8 -> 8 plus its BN 2*8.
    assert config.params((8, 2, 2), 8) == count_parameters(m) == 8 + (32 + 16) + (64 + 16)
    # GroupNorm 5 per element (fvcore), 1x1 convs and their BNs (2 per element) per token, q k^T and attn v.
    norm, qkv, attention, proj = 5 * 4 * 4, (32 + 16) * 4, 4 * 4 * (2 + 4), (64 + 16) * 4
    assert config.flops((8, 2, 2), 8) == fvcore_flops(m, torch.randn(1, 2, 2, 8)) == norm + qkv + attention + proj


def test_default_split_is_shvits_ratio():
    """r = 1 / 4.67 of the width attends: SHViT-S3's 352 and 448 wide stages give 75 and 96 channels."""
    config = CONFIGS["mixer"]["single_head_attention"]()
    assert [config.partial(352), config.partial(448)] == [75, 96]


def test_block_downsample_and_stem_shapes():
    block = create("block", {"type": "shvit", "mixer": {"type": "single_head_attention"}}, dim=24, size=(6, 6))
    assert block(torch.randn(2, 6, 6, 24)).shape == (2, 6, 6, 24)
    down = create("downsample", {"type": "shvit_downsample"}, in_chs=24, out_chs=40, size=(7, 7))
    assert down(torch.randn(2, 7, 7, 24)).shape == (2, 4, 4, 40) and down.out_size((7, 7)) == (4, 4)
    stem = create("stem", {"type": "patchify_convs"}, in_chs=3, out_chs=32, size=(64, 64))
    assert [layer[0].out_channels for layer in stem.convs if isinstance(layer, torch.nn.Sequential)] == [4, 8, 16, 32]
    assert stem(torch.randn(1, 64, 64, 3)).shape == (1, 4, 4, 32)


def test_a_mixer_free_block_is_conv_then_ffn():
    """SHViT's early-stage block ("i"): two residual branches, a depthwise conv-BN and a conv-BN FFN."""
    block = create("block", {"type": "shvit"}, dim=8, size=(4, 4)).eval()
    x = torch.randn(1, 4, 4, 8)
    xc = x.permute(0, 3, 1, 2)
    xc = xc + block.dwconv(xc)
    expected = (xc + block.ffn(xc)).permute(0, 2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    config = CONFIGS["block"]["shvit"]()
    # dwconv 9*8 + BN 16; FFN 8 -> 16 (+ BN 32) -> 8 (+ BN 16)
    assert config.params((8, 4, 4), 8) == count_parameters(block) == 72 + 16 + 128 + 32 + 128 + 16


def tiny(mixer: dict) -> dict:
    return {"name": "tiny_shvit", "input": {"resolution": 64}, "num_classes": 10,
            "stem": {"type": "patchify_convs", "convs": 3},
            "defaults": {"downsample": {"type": "shvit_downsample"}},
            "stages": [{"depth": 1, "width": 16, "block": {"type": "shvit"}},
                       {"depth": 2, "width": 32, "block": {"type": "shvit", "mixer": mixer}}],
            "head": {"type": "linear", "norm": "batchnorm", "norm_tokens": True}}


def test_a_bad_split_names_its_yaml_path():
    with pytest.raises(GenomeError) as err:
        load_genome(tiny({"type": "single_head_attention", "partial_dim": 40}))
    assert err.value.path == "stages[1].block.mixer.partial_dim"
    assert "40 exceeds width 32" in str(err.value)


def test_a_bad_split_exits_2_at_the_cli(tmp_path):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(tiny({"type": "single_head_attention", "partial_dim": 40})))
    result = run_nas("validate", tmp_path / "g.yaml")
    assert result.returncode == 2
    assert "stages[1].block.mixer.partial_dim (line 19): 40 exceeds width 32" in result.stderr


SPACE = """\
name: shvit_space
input: {resolution: 64}
num_classes: 10
stem: {type: patchify_convs, convs: 3}
defaults:
  downsample: {type: shvit_downsample}
stages:
  - {depth: 1, width: 16, block: {type: shvit}}
  - depth: {int: [1, 2]}
    width: 32
    block:
      type: shvit
      mixer: {choice: [{type: single_head_attention, qk_dim: {choice: [8, 16]}}, {type: attention, heads: 2}, null]}
"""


def test_single_head_attention_is_a_search_space_choice():
    """The mixer is one option of a small space; every option samples, builds and runs."""
    space = parse_yaml(SPACE)
    rng = random.Random(0)
    seen = set()
    for _ in range(12):
        genome = load_genome(instantiate(space, random_picker(rng)))
        mixer = genome.stages[1].block.mixer
        seen.add(mixer.type if mixer else None)
        model = compile_model(genome, seed=0).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert "single_head_attention" in seen


def test_a_supernet_over_the_space_computes_what_its_extracted_genomes_compute():
    space, rng = parse_yaml(SPACE), random.Random(1)
    genomes = [load_genome(instantiate(space, random_picker(rng, {"stages[1].block.mixer": option})))
               for option in range(3)]  # each mixer option once
    assert "single_head_attention" in {g.stages[1].block.mixer.type for g in genomes if g.stages[1].block.mixer}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert_supernet_computes_what_it_extracts(space, genomes, x)
