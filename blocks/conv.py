"""Convolutions: stems and downsampling, depthwise and separable mixers, the ConvNeXt block."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import nn

from blocks.base import BlockConfig, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import Act, DropPath, act_params, create_act, nchw, nhwc, optional_scale
from blocks.mlp import MlpConfig, hidden_width
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

# Annotations name role unions (Norm, Mixer, ChannelMixer, Block): blocks/__init__.py resolves them once
# every block type is registered, so a union includes types from files imported later.


class ConvDownsample(nn.Module):
    """norm -> strided conv -> norm -> act, each but the conv optional; serves as stem and as stage
    downsampling."""

    def __init__(self, in_chs, out_chs, size, kernel, stride, padding, bias=True, pre_norm=None,
                 post_norm=None, act="identity", pos_embed=False):
        super().__init__()
        self.pre_norm = create("norm", pre_norm, dim=in_chs) if pre_norm else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding, bias=bias)
        self.post_norm = create("norm", post_norm, dim=out_chs) if post_norm else nn.Identity()
        self.act = create_act(act)
        out_h, out_w = self.out_size(size)
        self.pos_embed = nn.Parameter(torch.zeros(out_h, out_w, out_chs)) if pos_embed else None
        if pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def out_size(self, size):
        return conv_out(size, self.conv.kernel_size[0], self.conv.stride[0], self.conv.padding[0])

    def forward(self, x):
        x = self.act(self.post_norm(nhwc(self.conv(nchw(self.pre_norm(x))))))
        return x if self.pos_embed is None else x + self.pos_embed


@register("stem", "downsample", module=ConvDownsample)
class ConvDownsampleConfig(BlockConfig):
    type: Literal["conv"] = "conv"
    examples = (
        {'kernel': 4, 'stride': 4},
        {'kernel': 7, 'stride': 4, 'padding': 2, 'post_norm': 'layernorm', 'pos_embed': True},
        {'kernel': 3, 'stride': 2, 'pre_norm': {'type': 'layernorm', 'bias': False}},
        {'kernel': 2, 'stride': 2, 'post_norm': 'batchnorm', 'bias': False},
    )
    kernel: PositiveInt
    stride: PositiveInt
    padding: NonNegativeInt = Field(None, description="default: (kernel - stride + 1) // 2")  # type: ignore[assignment]
    bias: bool = True
    pre_norm: Norm | None = None
    post_norm: Norm | None = None
    act: Act = "identity"
    pos_embed: bool = Field(False, description="learned absolute position embedding added after the conv")

    @model_validator(mode="before")
    @classmethod
    def _default_padding(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("padding") is None:
            kernel, stride = data.get("kernel"), data.get("stride")
            if isinstance(kernel, int) and isinstance(stride, int):
                data = {**data, "padding": max(kernel - stride + 1, 0) // 2}
        return data

    def out_shape(self, shape: Shape, out: int) -> Shape:
        h, w = conv_out(shape[1:], self.kernel, self.stride, self.padding)
        return (out, h, w)

    def check(self, shape: Shape, out: int) -> None:
        _, h, w = self.out_shape(shape, out)
        if h < 1 or w < 1 or min(shape[1:]) < self.stride:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for kernel {self.kernel}, "
                                   f"stride {self.stride}, padding {self.padding}")
        if self.pre_norm:
            check_within("pre_norm", self.pre_norm, shape)
        if self.post_norm:
            check_within("post_norm", self.post_norm, (out, h, w))

    def params(self, shape: Shape, out: int) -> int:
        c_out, h, w = self.out_shape(shape, out)
        n = self.kernel**2 * shape[0] * out + out * self.bias
        n += self.pre_norm.params(shape, shape[0]) if self.pre_norm else 0
        n += self.post_norm.params((out, h, w), out) if self.post_norm else 0
        return n + (count(c_out, h, w) if self.pos_embed else 0)

    def flops(self, shape: Shape, out: int) -> int:
        _, h, w = self.out_shape(shape, out)
        n = self.kernel**2 * shape[0] * out * h * w
        n += self.pre_norm.flops(shape, shape[0]) if self.pre_norm else 0
        return n + (self.post_norm.flops((out, h, w), out) if self.post_norm else 0)


class DWConv(nn.Module):
    """Depthwise convolution as a token mixer."""

    def __init__(self, dim, kernel=7, bias=True):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=bias)

    def forward(self, x):
        return nhwc(self.conv(nchw(x)))


@register("mixer", module=DWConv)
class DWConvConfig(BlockConfig):
    type: Literal["dwconv"] = "dwconv"
    examples = (
        {},
        {'kernel': 3, 'bias': False},
    )
    kernel: OddInt = 7
    bias: bool = True

    def params(self, shape: Shape, out: int) -> int:
        return shape[0] * (self.kernel**2 + self.bias)

    def flops(self, shape: Shape, out: int) -> int:
        return count(*shape) * self.kernel**2


class SepConv(nn.Module):
    """Inverted separable conv (MobileNetV2 style), the ConvFormer token mixer."""

    def __init__(self, dim, kernel=7, expansion=2.0, act1="star_relu", act2="identity", bias=False):
        super().__init__()
        mid = hidden_width(dim, expansion)
        self.pwconv1 = nn.Linear(dim, mid, bias=bias)
        self.act1 = create_act(act1)
        self.dwconv = nn.Conv2d(mid, mid, kernel, padding=kernel // 2, groups=mid, bias=bias)
        self.act2 = create_act(act2)
        self.pwconv2 = nn.Linear(mid, dim, bias=bias)

    def forward(self, x):
        x = self.act1(self.pwconv1(x))
        x = self.act2(nhwc(self.dwconv(nchw(x))))
        return self.pwconv2(x)


@register("mixer", module=SepConv)
class SepConvConfig(BlockConfig):
    type: Literal["sepconv"] = "sepconv"
    examples = (
        {},
        {'kernel': 3, 'expansion': 1.5, 'bias': True, 'act1': 'gelu'},
    )
    kernel: OddInt = 7
    expansion: PositiveFloat = 2.0
    act1: Act = "star_relu"
    act2: Act = "identity"
    bias: bool = False

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        mid = hidden_width(dim, self.expansion)
        weights = 2 * dim * mid + mid * self.kernel**2
        biases = (2 * mid + dim) * self.bias
        return weights + biases + act_params(self.act1) + act_params(self.act2)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        mid = hidden_width(dim, self.expansion)
        return h * w * (2 * dim * mid + mid * self.kernel**2)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * shape[1] * shape[2] * hidden_width(shape[0], self.expansion)


class ConvNeXtBlock(nn.Module):
    """dwconv -> norm -> MLP -> layer scale, one residual (ConvNeXt)."""

    def __init__(self, dim, kernel=7, mlp=None, norm=None, layer_scale=1e-6, bias=True, drop_path=0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=bias)
        self.norm = create("norm", norm, dim=dim)
        self.mlp = create("mlp", mlp, dim=dim)
        self.layer_scale = optional_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        y = self.mlp(self.norm(nhwc(self.dwconv(nchw(x)))))
        return x + self.drop_path(self.layer_scale(y))


@register("block", module=ConvNeXtBlock)
class ConvNeXtBlockConfig(BlockConfig):
    type: Literal["convnext"] = "convnext"
    kernel: OddInt = 7
    mlp: ChannelMixer = Field(default_factory=lambda: MlpConfig(ratio=4.0, act="gelu"))
    norm: Norm = Field(default_factory=LayerNormConfig)
    layer_scale: float | None = 1e-6
    bias: bool = True

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = dim * (self.kernel**2 + self.bias) + self.norm.params(shape, dim) + self.mlp.params(shape, dim)
        return n + (dim if self.layer_scale is not None else 0)

    def flops(self, shape: Shape, out: int) -> int:
        return count(*shape) * self.kernel**2 + self.norm.flops(shape, shape[0]) + self.mlp.flops(shape, shape[0])
