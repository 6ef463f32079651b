"""Modulation and gating token mixers (focal modulation, gnConv, scale-aware modulation, large kernel attention)
against naive NCHW re-statements of their papers, on small channels-last maps."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, ShapeError, create

DIM, SIZE = 16, (8, 8)


def mixer(tag, **fields):
    """A registered mixer built the way a MetaFormer block builds it, with its config."""
    config = CONFIGS["mixer"][tag].model_validate({"type": tag, **fields})
    torch.manual_seed(0)
    module = create("mixer", config.model_dump(), dim=DIM, size=SIZE).eval()
    return config, module


def channels_first(x):
    return x.permute(0, 3, 1, 2)


def pointwise(x, linear):
    """A channels-last nn.Linear applied as the 1x1 conv the papers write, on NCHW."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


def test_focal_modulation_is_gated_hierarchical_context_times_query():
    _, m = mixer("focal_modulation", focal_level=3, focal_window=3)
    x = torch.randn(2, *SIZE, DIM)
    xc = channels_first(x)
    projected = pointwise(xc, m.f)
    q, ctx, gates = projected[:, :DIM], projected[:, DIM:2 * DIM], projected[:, 2 * DIM:]
    context = torch.zeros_like(ctx)
    for level, kernel in enumerate((3, 5, 7)):
        conv = m.focal_layers[level][0]
        assert conv.kernel_size == (kernel, kernel)
        ctx = F.gelu(F.conv2d(ctx, conv.weight, padding=kernel // 2, groups=DIM))
        context = context + ctx * gates[:, level:level + 1]
    global_context = F.gelu(F.adaptive_avg_pool2d(ctx, 1))
    context = context + global_context * gates[:, 3:4]
    expected = pointwise(q * pointwise(context, m.h), m.proj)
    with torch.no_grad():
        assert torch.allclose(channels_first(m(x)), expected, atol=1e-5)


def test_focal_modulation_normalizes_the_modulator_by_the_number_of_levels():
    """``normalize_modulator`` divides the gated context by focal_level + 1 before h: with h's bias at zero
    the output, less proj's bias, shrinks by exactly that factor."""
    _, plain = mixer("focal_modulation", focal_level=2)
    _, normalized = mixer("focal_modulation", focal_level=2, normalize_modulator=True)
    with torch.no_grad():
        plain.h.bias.zero_()
        normalized.load_state_dict(plain.state_dict())
        x = torch.randn(1, *SIZE, DIM)
        bias = plain.proj.bias
        assert torch.allclose(normalized(x) - bias, (plain(x) - bias) / 3, atol=1e-6)


def test_focal_factor_must_keep_kernels_odd():
    with pytest.raises(ValueError, match="even"):
        CONFIGS["mixer"]["focal_modulation"](focal_factor=3)


def test_gnconv_recursion_of_order_three():
    config, m = mixer("gnconv", order=3, kernel=7, scale=1 / 3)
    x = torch.randn(2, *SIZE, DIM)
    widths = [4, 8, 16]  # DIM / 4, DIM / 2, DIM
    fused = pointwise(channels_first(x), m.proj_in)
    gate, branches = fused[:, :4], fused[:, 4:]
    branches = F.conv2d(branches, m.dwconv.weight, m.dwconv.bias, padding=3, groups=28) / 3
    b0, b1, b2 = branches.split(widths, dim=1)
    p = gate * b0
    p = pointwise(p, m.pws[0]) * b1
    p = pointwise(p, m.pws[1]) * b2
    expected = pointwise(p, m.proj_out)
    with torch.no_grad():
        assert torch.allclose(channels_first(m(x)), expected, atol=1e-5)
    assert config.params((DIM, *SIZE), DIM) == sum(p.numel() for p in m.parameters())


def test_gnconv_order_must_halve_the_width_evenly():
    config = CONFIGS["mixer"]["gnconv"](order=4)
    config.check((16, 8, 8), 16)
    with pytest.raises(ShapeError) as err:
        config.check((20, 8, 8), 20)
    assert err.value.field == "order"


def test_scale_aware_modulation_regroups_one_channel_of_each_head():
    """SMT's loop: head i convolves channels [i C/h, (i+1) C/h) with kernel 3 + 2i; the outputs are interleaved
    so channel g * heads + i is channel g of head i, then grouped 1x1 (C/h groups), BN, GELU, 1x1."""
    _, m = mixer("scale_aware_modulation", heads=4, kernel=3, expand_ratio=2)
    x = torch.randn(2, *SIZE, DIM)
    xc = channels_first(x)
    s = pointwise(xc, m.s)
    part = DIM // 4
    interleaved = torch.empty_like(s)
    for i in range(4):
        conv = m.local_convs[i]
        assert conv.kernel_size == (3 + 2 * i,) * 2
        out = F.conv2d(s[:, i * part:(i + 1) * part], conv.weight, conv.bias, padding=1 + i, groups=part)
        interleaved[:, i::4] = out
    widened = F.conv2d(interleaved, m.proj0.weight, m.proj0.bias, groups=part)
    widened = F.batch_norm(widened, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, eps=m.bn.eps)
    modulator = F.conv2d(F.gelu(widened), m.proj1.weight, m.proj1.bias)
    expected = pointwise(modulator * pointwise(xc, m.v), m.proj)
    with torch.no_grad():
        assert torch.allclose(channels_first(m(x)), expected, atol=1e-5)


def test_scale_aware_modulation_heads_divide_the_width():
    with pytest.raises(ShapeError) as err:
        CONFIGS["mixer"]["scale_aware_modulation"](heads=3).check((16, 8, 8), 16)
    assert err.value.field == "heads"


def test_lka_gated_form_is_van_attention_with_its_shortcut():
    _, m = mixer("lka")
    x = torch.randn(2, *SIZE, DIM)
    xc = channels_first(x)
    u = F.gelu(pointwise(xc, m.proj_1))
    attn = F.conv2d(u, m.conv0.weight, m.conv0.bias, padding=2, groups=DIM)
    attn = F.conv2d(attn, m.conv_spatial.weight, m.conv_spatial.bias, padding=9, dilation=3, groups=DIM)
    attn = pointwise(attn, m.conv1)
    expected = pointwise(u * attn, m.proj_2) + xc
    with torch.no_grad():
        assert torch.allclose(channels_first(m(x)), expected, atol=1e-5)


def test_lka_sees_a_23x23_window():
    """5x5, then 7x7 with dilation 3: one output pixel depends on a (5 + 6 * 3)-wide square of the input."""
    _, m = mixer("lka", gated=False)
    x = torch.randn(1, 31, 31, DIM, requires_grad=True)
    m(x)[0, 15, 15].sum().backward()
    reached = x.grad[0].abs().sum(-1) > 0
    rows, cols = reached.nonzero().unbind(1)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (4, 26, 4, 26)
