"""The GLMix family (blocks/glmix.py): the GLMix mixer against a re-statement of the paper's equations with
torch's own nn.MultiheadAttention, GLNet's block, hand-counted costs on a tiny map, the slot count at any
resolution, bad input with its YAML path, and GLMix as a choice of a small search space.

Every mixer takes and returns channels-last maps (B, H, W, C); ``create("mixer", cfg, dim=, size=)`` builds it.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, create
from nas import GenomeError, compile_model, load_genome
from nas.cli import main
from nas.cost.fvcore import fvcore_flops
from nas.io import parse_yaml
from nas.network import count_parameters
from nas.space import instantiate, random_picker
from tests.conftest import assert_supernet_computes_what_it_extracts

DIM = 16


def build(role: str, fields: dict, size=(4, 4), dim=DIM):
    config = CONFIGS[role][fields["type"]].model_validate(fields)
    torch.manual_seed(0)
    return config, create(role, config.model_dump(), dim=dim, size=size).eval()


def reference_glmix(m, x, heads):
    """GLMix as the paper writes it, on NCHW: slots = adaptive-avg-pooled map; logits = scale * cos(slot, token);
    slots <- softmax over tokens, weighted sum of tokens; slots <- multi-head attention among slots (torch's
    nn.MultiheadAttention holding the module's weights); tokens <- softmax over slots, weighted sum of slots;
    plus conv1x1 -> depthwise conv -> conv1x1 of the input."""
    b, c, h, w = x.shape
    mha = torch.nn.MultiheadAttention(c, heads, batch_first=True)
    mha.in_proj_weight.data.copy_(m.attn.qkv.weight)
    mha.in_proj_bias.data.copy_(m.attn.qkv.bias)
    mha.out_proj.load_state_dict(m.attn.proj.state_dict())
    tokens = x.flatten(2).transpose(1, 2)
    init = F.adaptive_avg_pool2d(x, m.pool).flatten(2).transpose(1, 2)
    logits = torch.einsum("bsc,bnc->bsn", F.normalize(init, dim=-1), F.normalize(tokens, dim=-1)) * m.slot_scale
    slots = logits.softmax(-1) @ tokens
    slots = mha(slots, slots, slots, need_weights=False)[0]
    out = (logits.softmax(1).transpose(1, 2) @ slots).transpose(1, 2).reshape(b, c, h, w)
    local = F.conv2d(x, m.local_in.weight[:, :, None, None], m.local_in.bias)
    local = F.conv2d(local, m.local_dw.weight, m.local_dw.bias, padding=m.local_dw.padding, groups=c)
    return out + F.conv2d(local, m.local_out.weight[:, :, None, None], m.local_out.bias)


def test_glmix_is_cluster_attend_dispatch_plus_local_conv():
    _, m = build("mixer", {"type": "glmix", "slots": 16, "heads": 2, "local_kernel": 3}, size=(8, 6))
    x = torch.randn(2, 8, 6, DIM)
    with torch.no_grad():
        expected = reference_glmix(m, x.permute(0, 3, 1, 2), heads=2)
        torch.testing.assert_close(m(x).permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


def test_glmix_counts_by_hand_on_a_tiny_map():
    """dim 16, 2 heads of 8, 4 slots, 3x3 local kernel, on a 4x4 map (16 tokens)."""
    config, m = build("mixer", {"type": "glmix", "slots": 4, "heads": 2, "local_kernel": 3})
    # temperature 1; qkv 16*48 + 48; proj 16*16 + 16; local: 1x1 16*16 + 16, depthwise 16*9 + 16, 1x1 16*16 + 16
    assert config.params((DIM, 4, 4), DIM) == count_parameters(m) == 1 + 816 + 272 + 272 + 160 + 272
    # logits, clustering, dispatching: 3 x 4 slots x 16 tokens x 16; attention among 4 slots:
    # 4 x (4 projections x 16 x 16 + 2 x 4 keys x 16); pooling: 16 x 16 inputs; local: 16 x 16 x (2 x 16 + 9)
    hand = 3 * 4 * 16 * 16 + 4 * (4 * 16 * 16 + 2 * 4 * 16) + 16 * 16 + 16 * 16 * (2 * 16 + 9)
    assert hand == 18432
    assert config.flops((DIM, 4, 4), DIM) == fvcore_flops(m, torch.randn(1, 4, 4, DIM)) == hand


def test_slot_count_is_the_same_at_any_resolution():
    """Attention sees the configured slots whatever the map, smaller than the pooling grid included; only the
    clustering, dispatching and local terms grow with the tokens."""
    config, m = build("mixer", {"type": "glmix", "slots": 16, "heads": 2})
    seen = []
    m.attn.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    for size in [(2, 2), (4, 4), (7, 5), (16, 16)]:
        with torch.no_grad():
            assert m(torch.randn(1, *size, DIM)).shape == (1, *size, DIM)
    assert seen == [(1, 1, 16, DIM)] * 4
    per_token = config.flops((DIM, 1, 2), DIM) - config.flops((DIM, 1, 1), DIM)
    assert config.flops((DIM, 16, 16), DIM) - config.flops((DIM, 1, 1), DIM) == 255 * per_token


def test_learned_slots_need_not_be_square():
    config, m = build("mixer", {"type": "glmix", "slot_init": "param", "slots": 5, "heads": 2})
    assert m.init_slots.shape == (1, 5, DIM)
    assert count_parameters(m) == config.params((DIM, 4, 4), DIM)


def test_glnet_block_adds_a_conv_position_encoding_before_both_residuals():
    """GLNet's block: x + CPE(x), then the two residual branches; GLMix pools its initial slots from the
    block's input as it arrived (before CPE and norm), as the authors' GLMixBlock does."""
    _, blk = build("block", {"type": "glnet", "mixer": {"type": "glmix", "slots": 4, "heads": 2}})
    x = torch.randn(2, 4, 4, DIM)
    with torch.no_grad():
        y = x + blk.pos_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = y + blk.mixer(blk.norm1(y), pool_from=x)
        expected = y + blk.mlp(blk.norm2(y))
        torch.testing.assert_close(blk(x), expected)
        # pooling from the normed map instead is another function
        assert not torch.allclose(blk.mixer(blk.norm1(y), pool_from=x), blk.mixer(blk.norm1(y)))


def genome(mixer: str, width: int = 64) -> dict:
    return parse_yaml(f"""\
name: g
input: {{channels: 3, resolution: 32}}
num_classes: 10
stem: {{type: conv, kernel: 4, stride: 4}}
stages:
  - {{depth: 1, width: {width}, block: {{type: glnet, mixer: {mixer}}}}}
""")


@pytest.mark.parametrize(("mixer", "path", "words"), [
    ("{type: glmix, slots: 60}", "stages[0].block.mixer.slots", "60 is not a square number"),
    ("{type: glmix, heads: 3}", "stages[0].block.mixer.heads", "3 does not divide width 64"),
    ("{type: glmix, local_kernel: 4}", "stages[0].block.mixer.local_kernel", "odd"),
])
def test_bad_glmix_names_its_yaml_path(mixer, path, words, tmp_path, capsys):
    with pytest.raises(GenomeError) as err:
        load_genome(genome(mixer))
    assert err.value.path == path and words in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: g\ninput: {{channels: 3, resolution: 32}}\nstem: {{type: conv, kernel: 4, stride: 4}}\n"
                   f"stages:\n  - {{depth: 1, width: 64, block: {{type: glnet, mixer: {mixer}}}}}\n")
    assert main(["validate", str(bad)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and path in line and "\n" not in line


SPACE = """\
name: s
input: {channels: 3, resolution: 32}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4}
defaults:
  downsample: {type: conv, kernel: 2, stride: 2}
stages:
  - {depth: 1, width: 16, block: {mixer: {type: dwconv, kernel: 3}}}
  - depth: {int: [1, 2]}
    width: 32
    block:
      mixer: {choice: [{type: glmix, slots: {choice: [4, 64]}, heads: 2}, {type: attention, heads: 2}, pooling]}
"""


def test_glmix_is_a_search_space_choice_at_small_resolution():
    """Sampled from a space at 32x32 (a 4x4 map in the GLMix stage: 16 tokens, fewer than 64 slots), each genome
    builds, runs forward and backward, and its analytic FLOPs equal fvcore's."""
    from nas import analytic_cost

    space = parse_yaml(SPACE)
    rng = random.Random(0)
    seen = set()
    for _ in range(100):  # draws are cheap; only the first genome of each slot count is built
        data = instantiate(space, random_picker(rng))
        mixer = data["stages"][1]["block"]["mixer"]
        if not isinstance(mixer, dict) or mixer["type"] != "glmix" or mixer["slots"] in seen:
            continue
        seen.add(mixer["slots"])
        g = load_genome(data)
        model = compile_model(g, seed=0)
        x = torch.randn(2, 3, 32, 32)
        model(x).sum().backward()
        assert fvcore_flops(model, x[:1]) == analytic_cost(g).flops
    assert seen == {4, 64}


SUPERNET_SPACE = """\
name: s
input: {channels: 3, resolution: 16}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4}
stages:
  - depth: 1
    width: {choice: [16, 24]}
    block:
      mixer: {choice: [{type: glmix, slots: {choice: [4, 16]}, heads: 2},
                       {type: glmix, slot_init: param, slots: {choice: [5, 9]}, heads: 2}]}
"""


def test_glmix_shares_weights_in_the_supernet():
    """A supernet over GLMix choices (widths, pooled or learned slot counts; the 0-dim temperature shared too)
    runs each sampled genome from slices of its largest weights, and ``extract`` gives a plain network
    computing the same."""
    from nas.supernet import sample_genome

    space, rng = parse_yaml(SUPERNET_SPACE), random.Random(1)
    genomes = [sample_genome(space, rng) for _ in range(4)]
    assert {g.stages[0].block.mixer.slot_init for g in genomes} == {"pool", "param"}
    assert_supernet_computes_what_it_extracts(space, genomes, torch.randn(1, 3, 16, 16), rtol=1e-4)
