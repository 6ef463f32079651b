"""Every registered block type: module output shape, analytic params and FLOPs against the real module.

Every registered type is covered: its all-defaults config (when it has no required field) and each config
in its class's ``examples``. A type with required fields and no examples fails the registry test.
"""
from __future__ import annotations

import pytest
import torch

from blocks import CONFIGS, create
from nas.cost.fvcore import fvcore_flops
from nas.network import count_parameters

DIM, SIZE = 32, (8, 8)


def _defaults_valid(cls) -> bool:
    try:
        cls()
    except ValueError:
        return False
    return True


def cases():
    for role, table in sorted(CONFIGS.items()):
        for tag, cls in sorted(table.items()):
            examples = list(cls.examples)
            if _defaults_valid(cls):
                examples.insert(0, {})
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
    missing = [f"{role} {tag}" for role, table in CONFIGS.items() for tag, cls in table.items()
               if not cls.examples and not _defaults_valid(cls)]
    assert not missing, f"give these configs an ``examples`` tuple: {missing}"


def test_blocks_train_and_backpropagate():
    block = create("block", {"type": "metaformer", "mixer": {"type": "sepconv"}, "mlp": {"type": "mlp"},
                             "norm": {"type": "layernorm"}, "layer_scale": 1e-6}, dim=DIM, size=SIZE, drop_path=0.5)
    block.train()
    x = torch.randn(4, *SIZE, DIM, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
