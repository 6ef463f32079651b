"""Convolutions: depthwise and separable token mixers, and the ConvNeXt block. (The conv stem and downsample
are in blocks/stems.py.)"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat
from torch import nn

from blocks.activations import Act, act_params, create_act
from blocks.base import BlockConfig, BlockModule, Shape, count, create, register
from blocks.layers import DropPath, nchw, nhwc, optional_scale, scaled_width
from blocks.mlp import MlpConfig
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import ChannelMixer, Norm


class DWConv(BlockModule):
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


class SepConv(BlockModule):
    """Inverted separable conv (MobileNetV2 style), the ConvFormer token mixer."""

    def __init__(self, dim, kernel=7, expansion=2.0, act1="star_relu", act2="identity", bias=False):
        super().__init__()
        mid = scaled_width(dim, expansion)
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
        mid = scaled_width(dim, self.expansion)
        weights = 2 * dim * mid + mid * self.kernel**2
        biases = (2 * mid + dim) * self.bias
        return weights + biases + act_params(self.act1) + act_params(self.act2)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        mid = scaled_width(dim, self.expansion)
        return h * w * (2 * dim * mid + mid * self.kernel**2)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * shape[1] * shape[2] * scaled_width(shape[0], self.expansion)


class ConvNeXtBlock(BlockModule):
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
