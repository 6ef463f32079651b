"""Focal modulation (FocalNet): a query modulated by gated, hierarchical depthwise-conv context."""
from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt, PositiveInt, field_validator
from torch import nn

from blocks.base import BlockConfig, Shape, register
from blocks.layers import Act, create_act, nchw, nhwc
from blocks.validators import OddInt


def focal_kernels(focal_level, focal_window, focal_factor):
    """Kernel of each focal level: ``focal_window``, growing by ``focal_factor`` per level."""
    return tuple(focal_window + focal_factor * level for level in range(focal_level))


class FocalModulation(nn.Module):
    """Linear to query, context and gates; ``focal_level`` stacked depthwise convs (each with an activation)
    give ever wider context, plus a global context from the mean of the last level. The gated sum goes through
    a 1x1 projection ``h`` into a modulator that multiplies the query, then ``proj``.

    The global context is ``mean``, not adaptive pooling, as in FocalNet: fvcore counts no FLOPs for it."""

    def __init__(self, dim, focal_level=2, focal_window=3, focal_factor=2, act="gelu", bias=True,
                 normalize_modulator=False):
        super().__init__()
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1, bias=bias)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), create_act(act))
            for k in focal_kernels(focal_level, focal_window, focal_factor))
        self.act = create_act(act)
        self.h = nn.Linear(dim, dim, bias=bias)  # FocalNet's 1x1 conv, on channels-last maps
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x):
        dim = x.shape[-1]
        q, ctx, gates = self.f(x).split((dim, dim, self.focal_level + 1), dim=-1)
        ctx, gates = nchw(ctx), nchw(gates)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.proj(q * self.h(nhwc(ctx_all)))


@register("mixer", module=FocalModulation)
class FocalModulationConfig(BlockConfig):
    """FocalNet-T (SRF): ``focal_level: 2, focal_window: 3``; (LRF): ``focal_level: 3, focal_window: 3``."""

    type: Literal["focal_modulation"] = "focal_modulation"
    examples = (
        {},
        {'focal_level': 3, 'focal_window': 5, 'normalize_modulator': True, 'bias': False},
        {'focal_level': 1, 'focal_factor': 0, 'act': 'relu'},
    )
    focal_level: PositiveInt = 2
    focal_window: OddInt = 3
    focal_factor: NonNegativeInt = 2
    act: Act = "gelu"
    bias: bool = True
    normalize_modulator: bool = False

    @field_validator("focal_factor")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even to keep every focal kernel odd")
        return value

    def _kernel_area(self) -> int:
        return sum(k * k for k in focal_kernels(self.focal_level, self.focal_window, self.focal_factor))

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        f_out = 2 * dim + self.focal_level + 1
        linears = dim * f_out + 2 * dim * dim + self.bias * (f_out + 2 * dim)
        return linears + dim * self._kernel_area()

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return h * w * dim * (2 * dim + self.focal_level + 1 + self._kernel_area() + 2 * dim)

    def workspace(self, shape: Shape, out: int) -> int:
        """The f projection, plus the running context sum."""
        dim, h, w = shape
        return h * w * (3 * dim + self.focal_level + 1)
