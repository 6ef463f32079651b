"""Recursive gated convolution, gnConv (HorNet): spatial interactions of order n from convs and products."""
from __future__ import annotations

from itertools import pairwise
from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from blocks.base import BlockConfig, Shape, ShapeError, register
from blocks.layers import nchw, nhwc
from blocks.validators import OddInt


def gated_widths(dim, order):
    """Channel widths of the recursion, narrowest first: dim / 2^(order-1), ..., dim / 2, dim."""
    return [dim // 2 ** i for i in range(order)][::-1]


class GnConv(nn.Module):
    """proj_in to 2C: a gate of the narrowest width plus one branch per order, all through one depthwise conv
    (scaled by ``scale``). The gate times the first branch is widened by a pointwise projection and multiplied
    by the next branch, order times over; proj_out maps back to C."""

    def __init__(self, dim, order=3, kernel=7, scale=1 / 3):
        super().__init__()
        self.widths = gated_widths(dim, order)
        self.scale = scale
        self.proj_in = nn.Linear(dim, 2 * dim)
        self.dwconv = nn.Conv2d(sum(self.widths), sum(self.widths), kernel, padding=kernel // 2,
                                groups=sum(self.widths))
        self.pws = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.widths[:-1], self.widths[1:]))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x):
        gate, branches = self.proj_in(x).split((self.widths[0], sum(self.widths)), dim=-1)
        branches = torch.split(nhwc(self.dwconv(nchw(branches))) * self.scale, self.widths, dim=-1)
        x = gate * branches[0]
        for pw, branch in zip(self.pws, branches[1:]):
            x = pw(x) * branch
        return self.proj_out(x)


@register("mixer", module=GnConv)
class GnConvConfig(BlockConfig):
    """HorNet-T (7x7): orders 2, 3, 4, 5 in stages 1-4, kernel 7, scale 1/3."""

    type: Literal["gnconv"] = "gnconv"
    examples = (
        {},
        {'order': 5, 'kernel': 3, 'scale': 1.0},
        {'order': 1},
    )
    order: int = Field(3, ge=1, le=6)
    kernel: OddInt = 7
    scale: PositiveFloat = Field(1 / 3, description="applied to the depthwise conv's output")

    def _widths(self, dim: int) -> list[int]:
        return gated_widths(dim, self.order)

    def check(self, shape: Shape, out: int) -> None:
        if shape[0] % 2 ** (self.order - 1):
            raise ShapeError("order", f"order {self.order} halves width {shape[0]} {self.order - 1} times; "
                                      f"{2 ** (self.order - 1)} must divide it")

    def _macs_per_pixel(self, dim: int) -> int:
        widths = self._widths(dim)
        pointwise = sum(a * b for a, b in pairwise(widths))
        return 3 * dim * dim + sum(widths) * self.kernel**2 + pointwise

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        widths = self._widths(dim)
        biases = 2 * dim + sum(widths) + sum(widths[1:]) + dim
        return self._macs_per_pixel(dim) + biases

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return h * w * self._macs_per_pixel(dim)

    def workspace(self, shape: Shape, out: int) -> int:
        """proj_in's output and the depthwise branches."""
        dim, h, w = shape
        return h * w * (2 * dim + sum(self._widths(dim)))
