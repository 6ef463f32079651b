"""Modulation token mixers: a context computed by convolutions multiplies a projection of the input, in place
of attention's query-key product.

- Focal modulation (FocalNet): a query modulated by gated, hierarchical depthwise-conv context.
- Scale-aware modulation (SMT): multi-head mixed convolution and scale-aware aggregation modulate a value.
- Recursive gated convolution, gnConv (HorNet): spatial interactions of order n from convs and products.
- Large kernel attention (VAN): a depthwise, a dilated depthwise and a 1x1 conv give an attention map that
  multiplies its input.

One file for one family: each is a token mixer in which convolutions build a context that multiplies a
projection of the input, and none brings a block, stem or helper of its own (FocalNet, SMT, HorNet and VAN
stack them in MetaFormer blocks), so a file each would split one family four ways.
"""
from __future__ import annotations

from itertools import pairwise
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, register
from blocks.layers import nchw, nhwc
from blocks.validators import OddInt

# --------------------------------------------------------------------------------------------------------------
# Focal modulation (FocalNet)

def focal_kernels(focal_level, focal_window, focal_factor):
    """Kernel of each focal level: ``focal_window``, growing by ``focal_factor`` per level."""
    return tuple(focal_window + focal_factor * level for level in range(focal_level))


class FocalModulation(BlockModule):
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


# --------------------------------------------------------------------------------------------------------------
# Scale-aware modulation (SMT)

class ScaleAwareModulation(BlockModule):
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


# --------------------------------------------------------------------------------------------------------------
# Recursive gated convolution (HorNet)

def gnconv_widths(dim, order):
    """Channel widths of the recursion, narrowest first: dim / 2^(order-1), ..., dim / 2, dim."""
    return [dim // 2 ** i for i in range(order)][::-1]


class GnConv(BlockModule):
    """proj_in to 2C: a gate of the narrowest width plus one branch per order, all through one depthwise conv
    (scaled by ``scale``). The gate times the first branch is widened by a pointwise projection and multiplied
    by the next branch, order times over; proj_out maps back to C."""

    def __init__(self, dim, order=3, kernel=7, scale=1 / 3):
        super().__init__()
        self.widths = gnconv_widths(dim, order)
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
        return gnconv_widths(dim, self.order)

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


# --------------------------------------------------------------------------------------------------------------
# Large kernel attention (VAN)

class LargeKernelAttention(BlockModule):
    """x * conv1x1(dilated_dwconv(dwconv(x))). VAN's defaults, 5x5 then 7x7 with dilation 3, span 21x21.

    With ``gated`` (VAN's attention module): proj 1x1 -> act -> the LKA product -> proj 1x1, plus a shortcut
    from the mixer's input, inside the block's own residual."""

    def __init__(self, dim, kernel=5, dilated_kernel=7, dilation=3, gated=True, act="gelu"):
        super().__init__()
        self.gated = gated
        self.proj_1 = nn.Linear(dim, dim) if gated else nn.Identity()
        self.act = create_act(act) if gated else nn.Identity()
        self.conv0 = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dilated_kernel, padding=dilation * (dilated_kernel // 2),
                                      dilation=dilation, groups=dim)
        self.conv1 = nn.Linear(dim, dim)  # VAN's 1x1 conv, on channels-last maps
        self.proj_2 = nn.Linear(dim, dim) if gated else nn.Identity()

    def forward(self, x):
        u = self.act(self.proj_1(x))
        attn = self.conv1(nhwc(self.conv_spatial(self.conv0(nchw(u)))))
        y = self.proj_2(u * attn)
        return y + x if self.gated else y


@register("mixer", module=LargeKernelAttention)
class LargeKernelAttentionConfig(BlockConfig):
    """VAN: the defaults. ``gated: false`` is the bare LKA product."""

    type: Literal["lka"] = "lka"
    examples = (
        {},
        {'gated': False},
        {'kernel': 3, 'dilated_kernel': 5, 'dilation': 2, 'act': 'relu'},
    )
    kernel: OddInt = 5
    dilated_kernel: OddInt = 7
    dilation: PositiveInt = 3
    gated: bool = Field(True, description="VAN's proj -> act -> LKA -> proj, with a shortcut")
    act: Act = "gelu"

    def _macs_per_pixel(self, dim: int) -> int:
        return dim * (self.kernel**2 + self.dilated_kernel**2) + dim * dim * (3 if self.gated else 1)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        return self._macs_per_pixel(dim) + dim * (5 if self.gated else 3)  # every conv has a bias

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return h * w * self._macs_per_pixel(dim)

    def workspace(self, shape: Shape, out: int) -> int:
        """The projected input and the attention map."""
        return 2 * shape[0] * shape[1] * shape[2]
