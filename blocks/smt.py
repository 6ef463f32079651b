"""Scale-aware modulation (SMT): multi-head mixed convolution, scale-aware aggregation, a modulated value."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt
from torch import nn

from blocks.base import BlockConfig, Shape, ShapeError, register
from blocks.layers import Act, create_act, nchw, nhwc
from blocks.validators import OddInt


class ScaleAwareModulation(nn.Module):
    """SMT's SAM token mixer.

    Multi-head mixed convolution: the channels of ``s(x)`` are split into ``heads`` parts, part i convolved
    depthwise with kernel ``kernel + 2 i`` (3, 5, 7, 9 by default), so each head sees its own scale.
    Scale-aware aggregation: channels are regrouped so each group holds one channel of every head, a grouped
    1x1 conv widens each group by ``expand_ratio`` and mixes its scales, then BatchNorm, act and a 1x1 conv back
    to C. The result modulates the value ``v(x)``; ``proj`` mixes the channels."""

    def __init__(self, dim, heads=4, kernel=3, expand_ratio=2, act="gelu", bias=True):
        super().__init__()
        self.heads = heads
        part = dim // heads
        self.v = nn.Linear(dim, dim, bias=bias)
        self.s = nn.Linear(dim, dim, bias=bias)
        self.local_convs = nn.ModuleList(
            nn.Conv2d(part, part, kernel + 2 * i, padding=(kernel + 2 * i) // 2, groups=part) for i in range(heads))
        self.proj0 = nn.Conv2d(dim, dim * expand_ratio, 1, groups=part)
        self.bn = nn.BatchNorm2d(dim * expand_ratio)
        self.act = create_act(act)
        self.proj1 = nn.Conv2d(dim * expand_ratio, dim, 1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, h, w, c = x.shape
        parts = nchw(self.s(x)).chunk(self.heads, dim=1)
        scales = [conv(part) for conv, part in zip(self.local_convs, parts)]
        # Channel g * heads + i is channel g of head i: group g of proj0 sees every scale.
        s = torch.stack(scales, dim=2).reshape(b, c, h, w)
        modulator = nhwc(self.proj1(self.act(self.bn(self.proj0(s)))))
        return self.proj(modulator * self.v(x))


@register("mixer", module=ScaleAwareModulation)
class ScaleAwareModulationConfig(BlockConfig):
    """SMT-T: ``heads: 4, kernel: 3, expand_ratio: 2`` (head kernels 3, 5, 7, 9)."""

    type: Literal["scale_aware_modulation"] = "scale_aware_modulation"
    examples = (
        {},
        {'heads': 2, 'kernel': 5, 'expand_ratio': 1, 'bias': False, 'act': 'relu'},
        {'heads': 8, 'expand_ratio': 3},
    )
    heads: PositiveInt = 4
    kernel: OddInt = 3
    expand_ratio: PositiveInt = 2
    act: Act = "gelu"
    bias: bool = True

    def check(self, shape: Shape, out: int) -> None:
        if shape[0] % self.heads:
            raise ShapeError("heads", f"{self.heads} does not divide width {shape[0]}")

    def _kernel_area(self) -> int:
        return sum((self.kernel + 2 * i) ** 2 for i in range(self.heads))

    def _macs_per_pixel(self, dim: int) -> int:
        wide = dim * self.expand_ratio
        # v, s, proj; mixed convs over C / heads channels each; grouped proj0 (heads inputs per output); proj1
        return 3 * dim * dim + dim // self.heads * self._kernel_area() + wide * self.heads + wide * dim

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        wide = dim * self.expand_ratio
        biases = 2 * dim * self.bias + dim + dim + wide + dim  # v, s; local convs; proj0; proj1; proj
        return self._macs_per_pixel(dim) + biases + 2 * wide  # + BatchNorm's affine

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return h * w * (self._macs_per_pixel(dim) + 2 * dim * self.expand_ratio)  # + BatchNorm, as fvcore counts

    def workspace(self, shape: Shape, out: int) -> int:
        """The widened map between proj0 and proj1, and v."""
        dim, h, w = shape
        return h * w * dim * (self.expand_ratio + 1)
