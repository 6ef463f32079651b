"""MLP-family blocks against naive references: the convolutional and gated channel mixers, MLP-Mixer's token
MLP, S2-MLP's spatial shift, and GFNet's global filter (a circular depthwise convolution as large as the map).

Maps are channels-last (B, H, W, C), as between blocks; modules come from ``create(role, config, **context)``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blocks import CONFIGS, ShapeError, create
from blocks.token_mlp import spatial_shift
from nas.cost.fvcore import fvcore_flops

torch.manual_seed(0)
DIM = 8


def conv_nhwc(conv, x):
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@pytest.mark.parametrize("conv_residual", [False, True])
def test_convffn_puts_a_depthwise_conv_between_the_linear_layers(conv_residual):
    ffn = create("mlp", {"type": "convffn", "ratio": 2.0, "conv_residual": conv_residual}, dim=DIM)
    x = torch.randn(2, 5, 6, DIM)
    hidden = ffn.fc1(x)
    mixed = conv_nhwc(ffn.dwconv, hidden)
    if conv_residual:  # SMT: act(x + dwconv(x))
        mixed = hidden + mixed
    torch.testing.assert_close(ffn(x), ffn.fc2(F.gelu(mixed)))
    assert ffn.dwconv.groups == ffn.dwconv.in_channels == 2 * DIM and ffn.dwconv.bias is not None


def test_swiglu_gates_the_value_half_with_silu_of_the_gate_half():
    glu = create("mlp", {"type": "glu", "ratio": 1.5}, dim=DIM)
    x = torch.randn(2, 3, 4, DIM)
    gate, value = glu.fc1(x).split(12, dim=-1)
    torch.testing.assert_close(glu(x), glu.fc2(F.silu(gate) * value))


def test_convglu_gate_sees_a_3x3_neighbourhood():
    glu = create("mlp", {"type": "convglu", "ratio": 1.0}, dim=DIM)
    x = torch.randn(1, 5, 5, DIM)
    gate, value = glu.fc1(x).split(DIM, dim=-1)
    torch.testing.assert_close(glu(x), glu.fc2(F.gelu(conv_nhwc(glu.dwconv, gate)) * value))
    # One position's output depends on its 3x3 neighbourhood only.
    x.requires_grad_(True)
    glu(x)[0, 2, 2].sum().backward()
    touched = x.grad[0].abs().sum(-1) > 0
    assert touched[1:4, 1:4].all() and touched.sum() == 9


def test_token_mlp_is_one_mlp_across_tokens_shared_by_channels():
    mixer = create("mixer", {"type": "token_mlp", "tokens_hidden": 7}, dim=DIM, size=(3, 4))
    x = torch.randn(2, 3, 4, DIM)
    w1, b1, w2, b2 = mixer.fc1.weight, mixer.fc1.bias, mixer.fc2.weight, mixer.fc2.bias
    assert w1.shape == (7, 12)
    tokens = x.reshape(2, 12, DIM)
    expected = torch.einsum("tk,bkc->btc", w2, F.gelu(torch.einsum("kn,bnc->bkc", w1, tokens) + b1[:, None]))
    expected = expected + b2[:, None]
    torch.testing.assert_close(mixer(x), expected.reshape(2, 3, 4, DIM))


def test_token_mlp_hidden_width_follows_the_token_count():
    config = CONFIGS["mixer"]["token_mlp"](ratio=0.5)
    assert config.params((DIM, 4, 4), DIM) == 2 * 16 * 8 + 8 + 16
    with pytest.raises(ShapeError, match="input resolution"):
        CONFIGS["mixer"]["token_mlp"](ratio=0.01).check((DIM, 4, 4), DIM)


def naive_spatial_shift(x):
    """Per element: quarter 0 takes the value from the row above, 1 from below, 2 from the left column, 3 from
    the right; at the border a position keeps its own value."""
    _, h, w, c = x.shape
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            for k in range(c):
                group = 0 if k < c // 4 else 1 if k < c // 2 else 2 if k < 3 * c // 4 else 3
                di, dj = [(-1, 0), (1, 0), (0, -1), (0, 1)][group]
                si, sj = i + di, j + dj
                inside = 0 <= si < h and 0 <= sj < w
                out[:, i, j, k] = x[:, si, sj, k] if inside else x[:, i, j, k]
    return out


def test_spatial_shift_moves_four_channel_quarters_one_step():
    x = torch.randn(2, 4, 5, 10)  # 10 channels: quarters of 2, 3, 2, 3 as c // 4 boundaries give
    torch.testing.assert_close(spatial_shift(x), naive_spatial_shift(x))


def test_shift_mlp_is_projection_act_shift_projection():
    mixer = create("mixer", {"type": "shift_mlp"}, dim=DIM)
    x = torch.randn(1, 4, 4, DIM)
    torch.testing.assert_close(mixer(x), mixer.fc2(naive_spatial_shift(F.gelu(mixer.fc1(x)))))


def circular_depthwise_conv(x, kernel):
    """y[h, w, c] = sum over (i, j) of x[(h - i) % H, (w - j) % W, c] * kernel[i, j, c]."""
    out = torch.zeros_like(x)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += torch.roll(x, shifts=(i, j), dims=(1, 2)) * kernel[i, j]
    return out


def test_global_filter_is_a_circular_depthwise_convolution_as_large_as_the_map():
    h, w = 6, 5
    mixer = create("mixer", {"type": "global_filter"}, dim=DIM, size=(h, w))
    kernel = torch.randn(h, w, DIM)
    with torch.no_grad():  # the filter of a spatial kernel: its spectrum
        mixer.filter.copy_(torch.view_as_real(torch.fft.rfft2(kernel, dim=(0, 1))))
    x = torch.randn(2, h, w, DIM)
    torch.testing.assert_close(mixer(x), circular_depthwise_conv(x, kernel), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(6, 10), (7, 7), (1, 4)])
def test_fft_flop_handles_match_the_analytic_count(size):
    config = CONFIGS["mixer"]["global_filter"]()
    mixer = create("mixer", config.model_dump(), dim=DIM, size=size)
    x = torch.randn(1, *size, DIM)
    assert fvcore_flops(mixer, x) == config.flops((DIM, *size), DIM) > 0
    assert fvcore_flops(mixer, torch.randn(3, *size, DIM)) == 3 * fvcore_flops(mixer, x)


def test_gfnet_block_has_one_residual_around_filter_and_mlp():
    block = create("block", {"type": "gfnet", "mixer": {"type": "global_filter"}, "mlp": {"type": "mlp"},
                             "norm": {"type": "layernorm"}}, dim=DIM, size=(4, 4), drop_path=0.0)
    x = torch.randn(2, 4, 4, DIM)
    expected = x + block.mlp(block.norm2(block.mixer(block.norm1(x))))
    torch.testing.assert_close(block(x), expected)
