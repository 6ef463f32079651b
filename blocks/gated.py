"""MambaOut: the Gated CNN block (a gated MLP whose value path runs a depthwise conv on part of its
channels), and the two-conv stem MambaOut and UniRepLKNet share."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.base import BlockConfig, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import Act, DropPath, create_act, nchw, nhwc
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

# Annotations name role unions (Norm): blocks/__init__.py resolves them.


def gated_widths(dim, expansion, conv_ratio):
    """(hidden width, channels of the hidden value path that go through the conv)."""
    return int(expansion * dim), int(conv_ratio * dim)


class GatedCNNBlock(nn.Module):
    """norm -> fc to (gate, value); the value's last ``conv_ratio * dim`` channels pass a depthwise conv;
    act(gate) * value -> fc back; residual. The block has no separate MLP."""

    def __init__(self, dim, expansion=8 / 3, kernel=7, conv_ratio=1.0, act="gelu", norm=None, drop_path=0.0):
        super().__init__()
        hidden, conv_chs = gated_widths(dim, expansion, conv_ratio)
        self.norm = create("norm", norm, dim=dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.splits = (hidden, hidden - conv_chs, conv_chs)
        self.conv = nn.Conv2d(conv_chs, conv_chs, kernel, padding=kernel // 2, groups=conv_chs)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        gate, identity, value = torch.split(self.fc1(self.norm(x)), self.splits, dim=-1)
        value = nhwc(self.conv(nchw(value)))
        y = self.fc2(self.act(gate) * torch.cat((identity, value), dim=-1))
        return x + self.drop_path(y)


@register("block", module=GatedCNNBlock)
class GatedCNNBlockConfig(BlockConfig):
    type: Literal["gated"] = "gated"
    examples = (
        {'conv_ratio': 0.5, 'kernel': 3, 'norm': 'batchnorm'},
    )
    expansion: PositiveFloat = 8 / 3
    kernel: OddInt = 7
    conv_ratio: float = Field(1.0, ge=0.0, description="channels of the value path convolved, as a fraction of "
                                                       "the block width (MambaOut: 1.0)")
    act: Act = "gelu"
    norm: Norm = Field(default_factory=LayerNormConfig)

    def check(self, shape: Shape, out: int) -> None:
        hidden, conv_chs = gated_widths(shape[0], self.expansion, self.conv_ratio)
        if conv_chs > hidden:
            raise ShapeError("conv_ratio", f"{conv_chs} conv channels exceed the {hidden} hidden channels")
        if conv_chs < 1:
            raise ShapeError("conv_ratio", f"{self.conv_ratio} of width {shape[0]} leaves no conv channel")
        super().check(shape, out)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        hidden, conv_chs = gated_widths(dim, self.expansion, self.conv_ratio)
        fcs = dim * 2 * hidden + 2 * hidden + hidden * dim + dim
        return self.norm.params(shape, dim) + fcs + conv_chs * (self.kernel**2 + 1)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        hidden, conv_chs = gated_widths(dim, self.expansion, self.conv_ratio)
        return self.norm.flops(shape, dim) + h * w * (3 * dim * hidden + conv_chs * self.kernel**2)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape[1:]) * gated_widths(shape[0], self.expansion, self.conv_ratio)[0]


class TwoConvStem(nn.Module):
    """conv (to half width) -> norm -> act -> conv -> norm, both 3x3 stride 2: a gentler 4x patchify
    (MambaOut, UniRepLKNet)."""

    def __init__(self, in_chs, out_chs, kernel=3, stride=2, mid_ratio=0.5, norm=None, act="gelu"):
        super().__init__()
        mid = stem_mid(out_chs, mid_ratio)
        self.conv1 = nn.Conv2d(in_chs, mid, kernel, stride=stride, padding=kernel // 2)
        self.norm1 = create("norm", norm, dim=mid)
        self.act = create_act(act)
        self.conv2 = nn.Conv2d(mid, out_chs, kernel, stride=stride, padding=kernel // 2)
        self.norm2 = create("norm", norm, dim=out_chs)

    def out_size(self, size):
        conv = self.conv1
        for _ in range(2):
            size = conv_out(size, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        return size

    def forward(self, x):
        x = self.act(self.norm1(nhwc(self.conv1(nchw(x)))))
        return self.norm2(nhwc(self.conv2(nchw(x))))


def stem_mid(out_chs, mid_ratio):
    return int(out_chs * mid_ratio)


@register("stem", module=TwoConvStem)
class TwoConvStemConfig(BlockConfig):
    type: Literal["two_conv"] = "two_conv"
    examples = (
        {},
        {'kernel': 5, 'mid_ratio': 1.0, 'norm': 'batchnorm', 'act': 'relu'},
    )
    kernel: OddInt = 3
    stride: PositiveInt = 2
    mid_ratio: PositiveFloat = Field(0.5, description="width after the first conv, as a fraction of the output")
    norm: Norm = Field(default_factory=LayerNormConfig)
    act: Act = "gelu"

    def _sizes(self, shape: Shape) -> list[tuple[int, int]]:
        first = conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2)
        return [first, conv_out(first, self.kernel, self.stride, self.kernel // 2)]

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *self._sizes(shape)[1])

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride**2:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for two stride-"
                                   f"{self.stride} convs")
        if stem_mid(out, self.mid_ratio) < 1:
            raise ShapeError("mid_ratio", f"{self.mid_ratio} of width {out} leaves no channel")
        check_within("norm", self.norm, (out, *self._sizes(shape)[1]))

    def params(self, shape: Shape, out: int) -> int:
        mid, (first, last) = stem_mid(out, self.mid_ratio), self._sizes(shape)
        convs = (shape[0] * mid + mid * out) * self.kernel**2 + mid + out
        return convs + self.norm.params((mid, *first), mid) + self.norm.params((out, *last), out)

    def flops(self, shape: Shape, out: int) -> int:
        mid, (first, last) = stem_mid(out, self.mid_ratio), self._sizes(shape)
        n = shape[0] * mid * self.kernel**2 * count(*first) + mid * out * self.kernel**2 * count(*last)
        return n + self.norm.flops((mid, *first), mid) + self.norm.flops((out, *last), out)
