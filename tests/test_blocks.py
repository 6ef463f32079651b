"""Every registered block type: module output shape, analytic params and FLOPs against the real module.

Every registered type is covered: its all-defaults config (when it has no required field) and each config
in its class's ``examples``. A type with required fields and no examples fails the registry test.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types

import pytest
import torch

from blocks import CONFIGS, MODULES, UNION_NAMES, create
from blocks.activations import NOT_SWITCHING, act_params, activation_table, create_act
from blocks.base import CONTEXT, FUSED_PROJECTIONS, BlockModule, HeadModule
from blocks.layers import scaled_width
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
        if role == "neck":  # a neck takes several maps: tests/test_neck.py checks it against its description
            continue
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


@pytest.mark.parametrize(("role", "tag", "example"), [c for c in cases() if c.values[0] != "head"])
def test_out_size_agrees_with_the_output(role, tag, example):
    """The contract's ``out_size`` (blocks.base.BlockModule): what the network builds the next module for."""
    config = CONFIGS[role][tag].model_validate({"type": tag, **example})
    shape, out, context = site(role)
    module = create(role, config.model_dump(), **context).eval()
    with torch.no_grad():
        y = module(torch.randn(1, shape[1], shape[2], shape[0]))
    assert tuple(module.out_size(shape[1:])) == tuple(y.shape[1:3]) == config.out_shape(shape, out)[1:]


@pytest.mark.parametrize(("role", "tag", "example"), list(cases()))
def test_block_runs_with_its_parameters_in_channels_last_memory(role, tag, example):
    """Training and timing on CUDA call ``model.to(memory_format=torch.channels_last)``, which re-lays every 4-D
    parameter, not only convolution kernels (GFNet's filter once failed so on a GPU): the output and the input's
    gradient must be what the block gives with its parameters as built."""
    config = CONFIGS[role][tag].model_validate({"type": tag, **example})
    shape, out, context = site(role)
    torch.manual_seed(0)
    module = create(role, config.model_dump(), **context).eval()
    x = torch.randn(2, shape[1], shape[2], shape[0])

    def run():  # the output and the input's gradient, a fixed random projection of the output as the loss
        xin = x.clone().requires_grad_()
        y = module(xin)
        projection = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        (y.float() * projection).sum().backward()
        return y.detach(), xin.grad

    expected = run()
    module.to(memory_format=torch.channels_last)
    for got, want in zip(run(), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_groupnorm_trains_its_weights_on_an_input_that_wants_no_gradient(bias):
    """A norm on frozen features: only its weights want a gradient. torch 2.13's CPU group_norm backward on a
    channels-last view crashed the process so (under a pooling mixer); blocks.norm.GroupNorm copies then."""
    norm = create("norm", {"type": "groupnorm", "bias": bias}, dim=DIM)
    pool = create("mixer", {"type": "pooling"}, dim=DIM, size=SIZE)
    x = torch.randn(2, *SIZE, DIM)
    y = norm(x)
    (pool(y) + y).square().sum().backward()
    reference = torch.nn.GroupNorm(1, DIM, affine=True)
    expected = reference(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
    torch.testing.assert_close(y, expected)
    assert torch.isfinite(norm.weight.grad).all() and norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("role", "tag"), [(r, t) for r, table in sorted(CONFIGS.items()) for t in sorted(table)])
def test_module_keeps_the_module_contract(role, tag):
    """A registered module subclasses BlockModule (a head HeadModule), takes every field of its config, and
    needs nothing that neither its config nor its role's context (blocks.base.CONTEXT) gives."""
    config, module = CONFIGS[role][tag], MODULES[role][tag]
    assert issubclass(module, HeadModule if role == "head" else BlockModule)
    parameters = inspect.signature(module).parameters
    fields = set(config.model_fields) - {"type"}
    assert fields <= set(parameters), f"{module.__name__} does not take {fields - set(parameters)}"
    needed = {name for name, p in parameters.items() if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD}
    assert needed <= fields | set(CONTEXT[role]), f"{module.__name__} needs {needed - fields - set(CONTEXT[role])}"


def test_fused_projections_hold_equal_parts():
    """Layers named ``qkv``/``kv`` stack q, k, v (k, v) in equal parts, which the supernet slices one by one."""
    found = 0
    for role, tag, example in (c.values for c in cases()):
        config = CONFIGS[role][tag].model_validate({"type": tag, **example})
        _, _, context = site(role)
        for name, layer in create(role, config.model_dump(), **context).named_modules():
            parts = FUSED_PROJECTIONS.get(name.rsplit(".", 1)[-1])
            if parts:
                found += 1
                assert isinstance(layer, torch.nn.Linear) and layer.out_features % parts == 0, (tag, name)
    assert found


def test_activations_are_one_registry():
    """Every registered activation is accepted wherever an ``act`` is, builds, and counts its parameters; the
    zero-cost proxy reads the same table."""
    from nas.evaluate.zero_cost import ACTIVATIONS

    for name in activation_table():
        layer = create_act(name)
        assert isinstance(layer, torch.nn.Module)
        config = CONFIGS["mlp"]["mlp"](act=name)
        mlp = create("mlp", config.model_dump(), dim=DIM)
        assert count_parameters(mlp) == config.params((DIM, *SIZE), DIM)
        assert act_params(name) == count_parameters(layer)
    assert set(ACTIVATIONS) == {type(create_act(n)) for n in activation_table() if n not in NOT_SWITCHING}
    with pytest.raises(ValueError, match="unknown activation"):
        create_act("swish2")
    with pytest.raises(ValueError):
        CONFIGS["mlp"]["mlp"](act="swish2")


def test_scaled_width_rounds_by_one_named_rule():
    assert [scaled_width(35, 2.5), scaled_width(33, 0.3), scaled_width(64, 8 / 3)] == [88, 10, 171]
    assert [scaled_width(35, 2.5, "floor"), scaled_width(33, 0.3, "floor")] == [87, 9]
    with pytest.raises(ValueError):
        scaled_width(35, 2.5, "ceil")


def test_role_unions_are_importable_and_bound_where_configs_use_them():
    import blocks

    for role, name in UNION_NAMES.items():
        union_type = getattr(blocks, name)
        for config in CONFIGS[role].values():
            assert getattr(sys.modules[config.__module__], name) is union_type


def test_no_two_definitions_in_blocks_share_a_name():
    """The exporter copies helpers into one flat model.py by name, so a name in blocks/ means one thing: two
    modules may import the same object, never define two under one name."""
    import blocks

    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    modules = [blocks, *(importlib.import_module(f"blocks.{m.name}") for m in pkgutil.iter_modules(blocks.__path__))]
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("__") and name.endswith("__") or isinstance(value, types.ModuleType):
                continue
            first = seen.setdefault(name, (module.__name__, value))
            same = first[1] is value or (type(value) in (int, float, str, bool) and first[1] == value)
            if not same:
                clashes.append(f"{name}: {first[0]} and {module.__name__}")
    assert not clashes, clashes
