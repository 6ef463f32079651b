"""ResNet: the v1.5 bottleneck block (stride on the 3x3 conv). (ResNet's 7x7 conv and max-pool stem is in
blocks/stems.py.)"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, conv_out, count, register
from blocks.layers import DropPath, conv_bn, nchw, nhwc, scaled_width
from blocks.validators import OddInt


class Bottleneck(BlockModule):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, BN after each conv, ReLU after the sum with the shortcut
    (a strided 1x1 conv + BN when the map changes shape)."""

    def __init__(self, in_chs, out_chs, mid=None, ratio=0.25, kernel=3, stride=1, act="relu", drop_path=0.0):
        super().__init__()
        mid = mid or scaled_width(out_chs, ratio)
        self.stride = stride
        self.reduce = conv_bn(in_chs, mid, act=act)
        self.conv = conv_bn(mid, mid, kernel, stride=stride, act=act)
        self.expand = conv_bn(mid, out_chs)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = conv_bn(in_chs, out_chs, stride=stride)
        self.act = create_act(act)
        self.drop_path = DropPath(drop_path)

    def out_size(self, size):
        kernel = self.conv[0].kernel_size[0]
        return conv_out(size, kernel, self.stride, kernel // 2)

    def forward(self, x):
        x = nchw(x)
        y = self.expand(self.conv(self.reduce(x)))
        return nhwc(self.act(self.shortcut(x) + self.drop_path(y)))


@register("block", module=Bottleneck)
class BottleneckConfig(BlockConfig):
    type: Literal["bottleneck"] = "bottleneck"
    examples = (
        {'stride': 2},
        {'mid': 12, 'kernel': 5, 'act': 'silu'},
    )
    mid: PositiveInt | None = Field(None, description="inner width; default: ratio x the output width")
    ratio: PositiveFloat = 0.25
    kernel: OddInt = 3
    stride: PositiveInt = 1
    act: Act = "relu"

    def _mid(self, out: int) -> int:
        return self.mid or scaled_width(out, self.ratio)

    def _projects(self, shape: Shape, out: int) -> bool:
        return self.stride != 1 or shape[0] != out

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2))

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride:
            raise ShapeError("stride", f"{self.stride} is larger than the {shape[1]}x{shape[2]} feature map")
        if self._mid(out) < 1:
            raise ShapeError("ratio", f"{self.ratio} of width {out} leaves no channel")

    def params(self, shape: Shape, out: int) -> int:
        in_chs, mid = shape[0], self._mid(out)
        n = in_chs * mid + mid * mid * self.kernel**2 + mid * out + 2 * (2 * mid + out)
        return n + ((in_chs + 2) * out if self._projects(shape, out) else 0)

    def flops(self, shape: Shape, out: int) -> int:
        in_chs, h, w = shape
        mid = self._mid(out)
        _, h2, w2 = self.out_shape(shape, out)
        n = (in_chs + 2) * mid * h * w + (mid * self.kernel**2 + 2) * mid * h2 * w2 + (mid + 2) * out * h2 * w2
        return n + ((in_chs + 2) * out * h2 * w2 if self._projects(shape, out) else 0)

    def workspace(self, shape: Shape, out: int) -> int:
        return self._mid(out) * count(*shape[1:])


