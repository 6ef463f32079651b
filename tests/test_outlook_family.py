"""VOLO's family (blocks/outlook.py): outlook attention against a per-window loop, its cost by hand, the
class-attention head with the token-labelling classifier, the patch embedding, errors with their YAML paths,
and outlook attention as a search-space choice."""
from __future__ import annotations

import random

import pytest
import torch
import yaml

from blocks import CONFIGS, create
from nas import GenomeError, compile_model, load_genome
from nas.cost.fvcore import fvcore_flops
from nas.io import parse_yaml
from nas.network import count_parameters
from nas.space import instantiate, random_picker
from tests.conftest import assert_supernet_computes_what_it_extracts, run_nas


def outlook(dim, size, **fields):
    config = CONFIGS["mixer"]["outlook_attention"].model_validate({"type": "outlook_attention", **fields})
    torch.manual_seed(0)
    return config, create("mixer", config.model_dump(), dim=dim, size=size).eval()


def test_outlook_attention_equals_a_per_window_loop():
    """The paper's Algorithm 1 position by position, on an odd 5x5 map (the last pooled windows are partial):
    the pooled token at each stride-2 centre predicts, per head, a (9, 9) attention over its 3x3 window; the
    window's values are mixed by it and added back where they came from."""
    dim, heads, k, s = 8, 2, 3, 2
    _, m = outlook(dim, (5, 5), heads=heads, kernel=k, stride=s)
    x = torch.randn(1, 5, 5, dim)
    with torch.no_grad():
        v = m.v(x)[0]
        out = torch.zeros(5, 5, dim)
        for i in range(3):
            for j in range(3):
                rows = x[0, s * i:s * i + s, s * j:s * j + s]  # the ceil-mode pooling window, clipped
                logits = m.attn(rows.mean((0, 1))).reshape(heads, k * k, k * k)
                weights = (logits * (dim // heads) ** -0.5).softmax(-1)
                cells = [(s * i - 1 + a, s * j - 1 + b) for a in range(k) for b in range(k)]
                values = torch.stack([v[r, c] if 0 <= r < 5 and 0 <= c < 5 else torch.zeros(dim) for r, c in cells])
                mixed = torch.einsum("hpq,qhd->phd", weights, values.reshape(k * k, heads, -1)).reshape(k * k, dim)
                for (r, c), value in zip(cells, mixed):
                    if 0 <= r < 5 and 0 <= c < 5:
                        out[r, c] += value
        torch.testing.assert_close(m(x)[0], m.proj(out))


def test_outlook_attention_cost_by_hand():
    """Width 8, 2 heads, 3x3 windows, stride 2, on a 4x4 map: 2x2 = 4 windows."""
    config, m = outlook(8, (4, 4), heads=2, kernel=3, stride=2)
    # v (no bias) 8x8, logits 8 -> 3^4 x 2 heads with bias, proj 8x8 with bias
    assert config.params((8, 4, 4), 8) == count_parameters(m) == 64 + 9 * 162 + 72
    # v and proj on 16 tokens, the logits on 4 windows, each window's (9, 9) @ (9, 8) mix
    flops = 2 * 16 * 64 + 4 * 8 * 162 + 4 * 81 * 8
    assert config.flops((8, 4, 4), 8) == fvcore_flops(m, torch.randn(1, 4, 4, 8)) == flops


def class_head(dim=16, classes=5, **fields):
    config = CONFIGS["head"]["class_attention"].model_validate({"type": "class_attention", **fields})
    torch.manual_seed(0)
    return config, create("head", config.model_dump(), in_chs=dim, num_classes=classes).eval()


def test_class_attention_updates_only_the_class_token():
    _, head = class_head(depth=1, heads=2)
    block = head.blocks[0]
    tokens = torch.randn(2, 10, 16)
    with torch.no_grad():
        updated = block(tokens)
        assert torch.equal(updated[:, 1:], tokens[:, 1:])
        normed = block.norm1(tokens)
        q = block.attn.q(normed[:, :1]).reshape(2, 1, 2, 8).transpose(1, 2)
        k, v = block.attn.kv(normed).reshape(2, 10, 2, 2, 8).permute(2, 0, 3, 1, 4)
        attended = ((q @ k.transpose(-1, -2)) / 8**0.5).softmax(-1) @ v  # the class token's query over all
        cls = tokens[:, :1] + block.attn.proj(attended.transpose(1, 2).reshape(2, 1, 16))
        cls = cls + block.mlp(block.norm2(cls))
        torch.testing.assert_close(updated[:, :1], cls)


def test_token_labelling_adds_half_the_best_patch_logit_per_class():
    _, head = class_head(depth=1, heads=2)
    x = torch.randn(2, 3, 3, 16)
    with torch.no_grad():
        tokens = torch.cat((head.cls_token.expand(2, -1, -1), x.reshape(2, 9, 16)), 1)
        tokens = head.norm(head.blocks[0](tokens))
        expected = head.fc(tokens[:, 0]) + 0.5 * head.aux_head(tokens[:, 1:]).max(1).values
        torch.testing.assert_close(head(x), expected)
        torch.testing.assert_close(head(x, pre_logits=True), tokens[:, 0])


def test_class_attention_head_cost_by_hand():
    """Width 16, one layer, MLP ratio 2, on a 2x2 map (5 tokens with the class token), 5 classes."""
    config, head = class_head(depth=1, heads=2, mlp_ratio=2.0)
    layer = 32 + (3 * 256 + 256 + 16) + 32 + (16 * 32 + 32 + 32 * 16 + 16)  # norm1, q kv proj, norm2, MLP
    assert config.params((16, 2, 2), 5) == count_parameters(head) == 16 + layer + 32 + 2 * (16 * 5 + 5)
    # norm1 (5 per element) and k, v over 5 tokens; q, attention (5 keys), proj, norm2, MLP for the class token;
    # the final norm over 5 tokens, the classifier and the auxiliary classifier on 4 patch tokens
    layer = 5 * 80 + 2 * 5 * 256 + 256 + 2 * 5 * 16 + 256 + 5 * 16 + 2 * 16 * 32
    flops = layer + 5 * 80 + 16 * 5 + 4 * 16 * 5
    assert config.flops((16, 2, 2), 5) == fvcore_flops(head, torch.randn(1, 2, 2, 16)) == flops


def test_patch_embed_is_stride_8_in_all():
    stem = create("stem", {"type": "conv_patch_embed"}, in_chs=3, out_chs=32, size=(64, 64))
    assert stem(torch.randn(1, 64, 64, 3)).shape == (1, 8, 8, 32) and stem.out_size((64, 64)) == (8, 8)


def tiny(mixer: dict, head: dict | None = None) -> dict:
    return {"name": "tiny_volo", "input": {"resolution": 64}, "num_classes": 10,
            "stem": {"type": "conv_patch_embed", "hidden": 16},
            "stages": [{"depth": 1, "width": 32, "block": {"mixer": mixer}},
                       {"depth": 1, "width": 64, "downsample": {"type": "conv", "kernel": 2, "stride": 2,
                                                                "pos_embed": True},
                        "block": {"mixer": {"type": "attention", "heads": 4}}}],
            "head": head or {"type": "class_attention", "heads": 4}}


@pytest.mark.parametrize(("mixer", "head", "path", "message"), [
    ({"type": "outlook_attention", "heads": 5}, None, "stages[0].block.mixer.heads", "5 does not divide width 32"),
    ({"type": "outlook_attention", "heads": 2, "kernel": 3, "stride": 4}, None, "stages[0].block.mixer.stride",
     "4 is larger than kernel 3"),
    ({"type": "outlook_attention", "heads": 2}, {"type": "class_attention", "heads": 6}, "head.heads",
     "6 does not divide width 64"),
])
def test_bad_input_names_its_yaml_path(mixer, head, path, message):
    with pytest.raises(GenomeError) as err:
        load_genome(tiny(mixer, head))
    assert err.value.path == path and message in str(err.value)


def test_bad_heads_exit_2_at_the_cli(tmp_path):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(tiny({"type": "outlook_attention", "heads": 5})))
    result = run_nas("validate", tmp_path / "g.yaml")
    assert result.returncode == 2
    assert "stages[0].block.mixer.heads" in result.stderr and "5 does not divide width 32" in result.stderr


SPACE = """\
name: volo_space
input: {resolution: 64}
num_classes: 10
stem: {type: conv_patch_embed, hidden: 16}
stages:
  - depth: {int: [1, 2]}
    width: 32
    block:
      mixer: {choice: [{type: outlook_attention, heads: {choice: [2, 4]}, stride: {choice: [1, 2]}}, pooling]}
  - depth: 1
    width: 64
    downsample: {type: conv, kernel: 2, stride: 2, pos_embed: true}
    block: {mixer: {type: attention, heads: 4}}
head: {type: class_attention, heads: 4, depth: {choice: [1, 2]}}
"""


def test_outlook_attention_is_a_search_space_choice():
    space = parse_yaml(SPACE)
    rng = random.Random(0)
    seen = set()
    for _ in range(10):
        genome = load_genome(instantiate(space, random_picker(rng)))
        seen.add(genome.stages[0].block.mixer.type)
        model = compile_model(genome, seed=0).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert "outlook_attention" in seen


def test_a_supernet_over_the_space_computes_what_its_extracted_genomes_compute():
    space, rng = parse_yaml(SPACE), random.Random(1)
    genomes = [load_genome(instantiate(space, random_picker(rng, {"stages[0].block.mixer": option})))
               for option in range(2)]  # each mixer option once
    assert "outlook_attention" in {g.stages[0].block.mixer.type for g in genomes if g.stages[0].block.mixer}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert_supernet_computes_what_it_extracts(space, genomes, x)
