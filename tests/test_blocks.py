"""Every registered block type: module output shape, analytic params and FLOPs against the real module.

A new block type is covered automatically when its config has defaults for every field; otherwise add an
example below (the test for the registry fails until you do).
"""
from __future__ import annotations

import pytest
import torch

from blocks import CONFIGS, create
from nas.cost.fvcore import fvcore_flops
from nas.network import count_parameters

EXAMPLES: dict[tuple[str, str], list[dict]] = {
    ("stem", "conv"): [{"kernel": 4, "stride": 4}, {"kernel": 7, "stride": 4, "padding": 2, "post_norm": "layernorm",
                                                     "pos_embed": True}],
    ("downsample", "conv"): [{"kernel": 3, "stride": 2, "pre_norm": {"type": "layernorm", "bias": False}},
                             {"kernel": 2, "stride": 2, "post_norm": "batchnorm", "bias": False}],
    ("block", "metaformer"): [{"mixer": {"type": "attention", "heads": 4}, "layer_scale": 1e-5, "res_scale": 1.0},
                              {"mixer": "pooling", "norm": {"type": "groupnorm", "bias": False}, "mlp": None}],
    ("block", "sequence"): [{"blocks": [{"type": "convnext"}, {"mixer": {"type": "attention", "window": 4}}]}],
    ("mixer", "attention"): [{}, {"heads": 4, "qkv_bias": True, "proj_bias": True, "window": 4},
                             {"heads": 2, "head_dim": 8}],
    ("mixer", "sepconv"): [{}, {"kernel": 3, "expansion": 1.5, "bias": True, "act1": "gelu"}],
    ("mixer", "dwconv"): [{}, {"kernel": 3, "bias": False}],
    ("mlp", "mlp"): [{}, {"ratio": 2.5, "act": "star_relu", "bias": False}],
    ("norm", "groupnorm"): [{}, {"groups": 4, "bias": False}],
    ("head", "linear"): [{}, {"norm": None, "bias": False}],
    ("head", "mlp_head"): [{}, {"hidden_norm": None, "act": "gelu"}],
}

DIM, SIZE = 32, (8, 8)


def cases():
    for role, table in sorted(CONFIGS.items()):
        for tag, cls in sorted(table.items()):
            examples = EXAMPLES.get((role, tag))
            if examples is None:
                examples = [{}]
            for i, example in enumerate(examples):
                yield pytest.param(role, tag, example, id=f"{role}-{tag}-{i}")


@pytest.mark.parametrize("tag", sorted(CONFIGS["head"]))
def test_heads_without_classes_return_pooled_features(tag):
    config = CONFIGS["head"][tag]()
    head = create("head", config.model_dump(), in_chs=DIM, num_classes=0)
    assert head(torch.randn(2, *SIZE, DIM)).shape == (2, DIM)
    assert count_parameters(head) == config.params((DIM, *SIZE), 0)


def site(role: str):
    """(input shape (C, H, W), output channels, module context) for a block of this role."""
    if role == "stem":
        return (3, 32, 32), 16, {"in_chs": 3, "out_chs": 16, "size": (32, 32)}
    if role == "downsample":
        return (16, 16, 16), DIM, {"in_chs": 16, "out_chs": DIM, "size": (16, 16)}
    if role == "head":
        return (DIM, *SIZE), 10, {"in_chs": DIM, "num_classes": 10}
    return (DIM, *SIZE), DIM, {"dim": DIM, "in_chs": DIM, "out_chs": DIM, "size": SIZE, "drop_path": 0.0}


@pytest.mark.parametrize(("role", "tag", "example"), list(cases()))
def test_block_matches_its_analytic_description(role, tag, example):
    config = CONFIGS[role][tag].model_validate({"type": tag, **example})
    shape, out, context = site(role)
    config.check(shape, out)
    torch.manual_seed(0)
    module = create(role, config.model_dump(), **context).eval()
    x = torch.randn(1, shape[1], shape[2], shape[0])  # channels-last, as between blocks
    with torch.no_grad():
        y = module(x)
    expected = config.out_shape(shape, out)
    if role == "head":
        assert tuple(y.shape) == (1, expected[0])
    else:
        assert tuple(y.shape) == (1, expected[1], expected[2], expected[0])
    assert count_parameters(module) == config.params(shape, out)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    assert frozen == config.frozen_params(shape, out)
    assert fvcore_flops(module, x) == config.flops(shape, out)


def test_every_block_type_has_an_example():
    for role, table in CONFIGS.items():
        for tag, cls in table.items():
            if (role, tag) in EXAMPLES:
                continue
            try:
                cls()
            except Exception as err:  # needs required fields
                raise AssertionError(f"add an example for {role} {tag!r} to EXAMPLES") from err


def test_blocks_train_and_backpropagate():
    block = create("block", {"type": "metaformer", "mixer": {"type": "sepconv"}, "mlp": {"type": "mlp"},
                             "norm": {"type": "layernorm"}, "layer_scale": 1e-6}, dim=DIM, size=SIZE, drop_path=0.5)
    block.train()
    x = torch.randn(4, *SIZE, DIM, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
