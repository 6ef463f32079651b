"""MambaOut: the Gated CNN block, a gated MLP whose value path runs a depthwise conv on part of its channels.
(MambaOut's two-conv stem is in blocks/stems.py.)"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, create, register
from blocks.layers import DropPath, nchw, nhwc, scaled_width
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Norm


def gated_widths(dim, expansion, conv_ratio):
    """(hidden width, channels of the hidden value path that go through the conv)."""
    return scaled_width(dim, expansion, "floor"), scaled_width(dim, conv_ratio, "floor")


class GatedCNNBlock(BlockModule):
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


