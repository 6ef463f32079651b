"""Multi-order gated aggregation (MogaNet): a token mixer and a channel mixer that each re-weight a feature by
its difference from a summary of itself ("feature decomposition"), to favour the mid-order interactions
that plain convnets and ViTs under-use.

- ``gated_aggregation`` (MogaNet's spatial aggregation): 1x1 conv, x + sigma * (x - mean over the map), SiLU;
  then a SiLU gate times a multi-order value (a 5x5 depthwise conv, whose channels split into three parts:
  the first kept, the others through dilated 5x5 and 7x7 depthwise convs), a 1x1 conv, and a shortcut.
- ``channel_aggregation`` (MogaNet's channel aggregation FFN): fc1, 3x3 depthwise conv, GELU, then
  x + sigma * (x - GELU(a 1x1 conv of x to one channel)), fc2.

MogaNet stacks them in MetaFormer blocks with BatchNorm and layer scale (search_spaces/zoo/moganet_t.yaml).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, register
from blocks.layers import Scale, nchw, nhwc, scaled_width
from blocks.mlp import depthwise_conv
from blocks.validators import OddInt

DECOMPOSE_INIT = 1e-5  # MogaNet's init of the feature-decomposition scale sigma


def order_widths(dim, split):
    """Channels of the three orders of the value: MogaNet's int() of each share of ``split``, the first
    taking the remainder."""
    total = sum(split)
    middle, last = int(split[1] / total * dim), int(split[2] / total * dim)
    return dim - middle - last, middle, last


def dilated_depthwise(channels, kernel, dilation):
    return nn.Conv2d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                     groups=channels)


class MultiOrderGatedAggregation(BlockModule):
    """MogaNet's spatial aggregation on channels-last maps (its 1x1 convs are linear layers here)."""

    def __init__(self, dim, kernels=(5, 5, 7), dilations=(1, 2, 3), split=(1, 3, 4), act="silu"):
        super().__init__()
        self.widths = order_widths(dim, split)
        self.proj_1 = nn.Linear(dim, dim)
        self.sigma = Scale(dim, DECOMPOSE_INIT)
        self.act_value = create_act(act)
        self.gate = nn.Linear(dim, dim)
        self.dw_conv0 = dilated_depthwise(dim, kernels[0], dilations[0])
        self.dw_conv1 = dilated_depthwise(self.widths[1], kernels[1], dilations[1])
        self.dw_conv2 = dilated_depthwise(self.widths[2], kernels[2], dilations[2])
        self.pw_conv = nn.Linear(dim, dim)
        self.act_gate = create_act(act)
        self.proj_2 = nn.Linear(dim, dim)

    def value(self, x):
        """Multi-order context: one depthwise conv for all, then wider dilated ones for two channel parts."""
        x = self.dw_conv0(nchw(x))
        first, middle, last = x.split(self.widths, dim=1)
        x = torch.cat([first, self.dw_conv1(middle), self.dw_conv2(last)], dim=1)
        return self.pw_conv(nhwc(x))

    def forward(self, x):
        shortcut = x
        x = self.proj_1(x)
        # adaptive pooling, as MogaNet computes the mean (fvcore counts it: one FLOP per input element)
        mean = nhwc(F.adaptive_avg_pool2d(nchw(x), 1))
        x = self.act_value(x + self.sigma(x - mean))
        x = self.proj_2(self.act_gate(self.gate(x)) * self.act_gate(self.value(x)))
        return x + shortcut


@register("mixer", module=MultiOrderGatedAggregation)
class MultiOrderGatedAggregationConfig(BlockConfig):
    """MogaNet: the defaults (kernels 5, 5, 7 with dilations 1, 2, 3 on 1/8, 3/8, 4/8 of the channels)."""

    type: Literal["gated_aggregation"] = "gated_aggregation"
    examples = (
        {},
        {'kernels': [3, 3, 5], 'dilations': [1, 1, 2], 'split': [2, 1, 1], 'act': 'gelu'},
    )
    kernels: tuple[OddInt, OddInt, OddInt] = Field((5, 5, 7), description="the base, middle and last order's "
                                                                         "depthwise kernels")
    dilations: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 2, 3)
    split: tuple[PositiveInt, PositiveInt, PositiveInt] = Field((1, 3, 4), description="relative channel shares "
                                                                                      "of the three orders")
    act: Act = "silu"

    def check(self, shape: Shape, out: int) -> None:
        total = sum(self.split)
        if shape[0] % total:
            raise ShapeError("split", f"its sum {total} does not divide width {shape[0]}")

    def _macs_per_pixel(self, dim: int) -> int:
        widths = order_widths(dim, self.split)
        depthwise = dim * self.kernels[0] ** 2 + widths[1] * self.kernels[1] ** 2 + widths[2] * self.kernels[2] ** 2
        return 4 * dim * dim + depthwise  # proj_1, gate, pw_conv, proj_2

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        widths = order_widths(dim, self.split)
        biases = 4 * dim + dim + widths[1] + widths[2]  # linears; depthwise convs
        return self._macs_per_pixel(dim) + biases + dim  # + sigma

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return h * w * (self._macs_per_pixel(dim) + dim)  # + the mean

    def workspace(self, shape: Shape, out: int) -> int:
        """The decomposed input, the gate and the value."""
        return 3 * count(*shape)


class ChannelAggregationFfn(BlockModule):
    """MogaNet's channel aggregation FFN on channels-last maps: hidden = int(dim * ratio)."""

    def __init__(self, dim, ratio=4.0, kernel=3, act="gelu"):
        super().__init__()
        hidden = scaled_width(dim, ratio, "floor")
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = depthwise_conv(hidden, kernel)
        self.act = create_act(act)
        self.decompose = nn.Linear(hidden, 1)
        self.sigma = Scale(hidden, DECOMPOSE_INIT)
        self.decompose_act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = self.act(nhwc(self.dwconv(nchw(self.fc1(x)))))
        x = x + self.sigma(x - self.decompose_act(self.decompose(x)))
        return self.fc2(x)


@register("mlp", module=ChannelAggregationFfn)
class ChannelAggregationFfnConfig(BlockConfig):
    """MogaNet-T: ``ratio: 8`` in stages 1-2, 4 in stages 3-4."""

    type: Literal["channel_aggregation"] = "channel_aggregation"
    examples = (
        {},
        {'ratio': 2.5, 'kernel': 5, 'act': 'relu'},
    )
    ratio: PositiveFloat = 4.0
    kernel: OddInt = 3
    act: Act = "gelu"

    def _hidden(self, dim: int) -> int:
        return scaled_width(dim, self.ratio, "floor")

    def check(self, shape: Shape, out: int) -> None:
        if self._hidden(shape[0]) < 1:
            raise ShapeError("ratio", f"{self.ratio} of width {shape[0]} leaves no hidden channel")

    def _macs_per_pixel(self, dim: int) -> int:
        hidden = self._hidden(dim)
        return hidden * (2 * dim + self.kernel**2 + 1)  # fc1, fc2, depthwise conv, decompose

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        hidden = self._hidden(dim)
        return self._macs_per_pixel(dim) + hidden + dim + hidden + 1 + hidden  # biases; sigma

    def flops(self, shape: Shape, out: int) -> int:
        return shape[1] * shape[2] * self._macs_per_pixel(shape[0])

    def workspace(self, shape: Shape, out: int) -> int:
        """fc1's output and the activated hidden map."""
        return 2 * shape[1] * shape[2] * self._hidden(shape[0])
