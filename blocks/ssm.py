"""State-space token mixers: Mamba, Vision Mamba (bidirectional) and VMamba's 2D selective scan (SS2D).

All three share ``SelectiveSSM``: K scan directions, each with its own x_proj, dt_proj, A and D, run as one
selective scan (blocks/scan.py) whose B and C come in K groups. 2D maps are flattened row-major to sequences.
Projections are matmuls on (batch, K, L, channels) so fvcore counts them exactly.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, register
from blocks.layers import nchw, scaled_width
from blocks.scan import scan_flops, selective_scan
from blocks.validators import OddInt


def auto_dt_rank(dim, dt_rank):
    """Mamba's and VMamba's "auto" rank of the delta projection: ceil(dim / 16)."""
    return dt_rank or math.ceil(dim / 16)


class SelectiveSSM(nn.Module):
    """K directions of input-dependent (delta, B, C) selective scans over (batch, K, L, width) sequences."""

    def __init__(self, width, d_state, dt_rank, directions=1, dt_min=0.001, dt_max=0.1):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        bound = width**-0.5
        self.x_proj = nn.Parameter(torch.empty(directions, width, dt_rank + 2 * d_state).uniform_(-bound, bound))
        self.dt_proj = nn.Parameter(torch.empty(directions, dt_rank, width).uniform_(-dt_rank**-0.5, dt_rank**-0.5))
        # delta starts log-uniform in [dt_min, dt_max]: the bias is its inverse softplus
        dt = torch.exp(torch.rand(directions, width) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real init: A = -(1, 2, ..., d_state) in every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(directions * width, 1))
        self.D = nn.Parameter(torch.ones(directions * width))

    def forward(self, xs):
        batch, directions, length, width = xs.shape
        x_dbl = xs @ self.x_proj  # (batch, K, L, dt_rank + 2 * d_state)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt @ self.dt_proj  # (batch, K, L, width)
        y = selective_scan(
            xs.transpose(-1, -2).reshape(batch, directions * width, length),
            delta.transpose(-1, -2).reshape(batch, directions * width, length),
            -torch.exp(self.A_log),
            B.transpose(-1, -2).contiguous(),
            C.transpose(-1, -2).contiguous(),
            self.D,
            delta_bias=self.dt_bias.reshape(-1),
            softplus=True,
        )
        return y.reshape(batch, directions, width, length).transpose(-1, -2)  # (batch, K, L, width)


class Mamba(BlockModule):
    """Mamba: in_proj to (x, z), causal depthwise conv1d + SiLU on x, selective scan, y * silu(z), out_proj.
    With ``directions=2`` the second direction reads the sequence reversed, with its own conv and SSM (Vim)."""

    def __init__(self, dim, d_state=16, expand=2.0, dt_rank=None, d_conv=4, conv_bias=True, bias=False,
                 directions=1, average=False):
        super().__init__()
        width = scaled_width(dim, expand, "floor")
        self.directions, self.d_conv, self.average = directions, d_conv, average
        self.in_proj = nn.Linear(dim, 2 * width, bias=bias)
        # one depthwise conv over the stacked directions: each direction has its own filters
        self.conv = nn.Conv1d(directions * width, directions * width, d_conv, groups=directions * width,
                              bias=conv_bias)
        self.ssm = SelectiveSSM(width, d_state, auto_dt_rank(dim, dt_rank), directions)
        self.out_proj = nn.Linear(width, dim, bias=bias)
        # Modules, not F.silu, so that hooks (the zero-cost proxies' activation sites) see them; no weights.
        self.act, self.gate_act = nn.SiLU(), nn.SiLU()

    def forward(self, x):
        b, h, w, c = x.shape
        x, z = self.in_proj(x.reshape(b, h * w, c)).chunk(2, dim=-1)
        xs = torch.stack([x, x.flip(1)], 1) if self.directions == 2 else x[:, None]  # (b, K, L, width)
        xs = xs.transpose(-1, -2).reshape(b, -1, h * w)
        xs = self.act(self.conv(F.pad(xs, (self.d_conv - 1, 0))))  # causal: left padding only
        ys = self.ssm(xs.reshape(b, self.directions, -1, h * w).transpose(-1, -2))
        y = ys[:, 0] if self.directions == 1 else ys[:, 0] + ys[:, 1].flip(1)
        if self.average:
            y = y / self.directions
        return self.out_proj(y * self.gate_act(z)).reshape(b, h, w, c)


class Vim(Mamba):
    """Vision Mamba's bidirectional block (Vim "bimamba v2"): shared in/out projections, a forward and a
    backward scan over the flattened tokens with separate conv, x_proj, dt_proj, A and D, summed then gated."""

    def __init__(self, dim, d_state=16, expand=2.0, dt_rank=None, d_conv=4, conv_bias=True, bias=False,
                 average=True):
        super().__init__(dim, d_state, expand, dt_rank, d_conv, conv_bias, bias, directions=2, average=average)


def cross_scan(x):
    """(b, width, H, W) -> (b, 4, L, width): row-major, column-major, and both reversed."""
    rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], 1).transpose(-1, -2)


def cross_merge(ys, h, w):
    """Sum of the four directions' outputs back in row-major order: (b, 4, L, width) -> (b, L, width)."""
    b, _, length, width = ys.shape
    rows = ys[:, 0] + ys[:, 2].flip(1)
    cols = ys[:, 1] + ys[:, 3].flip(1)
    return rows + cols.reshape(b, w, h, width).transpose(1, 2).reshape(b, length, width)


class SS2D(BlockModule):
    """VMamba's 2D selective scan: in_proj, depthwise conv + SiLU, four-direction cross-scan, per-direction
    selective scans, cross-merge, LayerNorm, optional silu(z) gate, out_proj."""

    def __init__(self, dim, d_state=16, ratio=2.0, dt_rank=None, d_conv=3, conv_bias=True, gate=True, bias=False):
        super().__init__()
        width = scaled_width(dim, ratio, "floor")
        self.gate = gate
        self.in_proj = nn.Linear(dim, (2 if gate else 1) * width, bias=bias)
        self.conv = nn.Conv2d(width, width, d_conv, padding=d_conv // 2, groups=width, bias=conv_bias)
        self.ssm = SelectiveSSM(width, d_state, auto_dt_rank(dim, dt_rank), directions=4)
        self.out_norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, dim, bias=bias)
        # Modules, not F.silu, so that hooks (the zero-cost proxies' activation sites) see them; no weights.
        self.act = nn.SiLU()
        self.gate_act = nn.SiLU() if gate else None

    def forward(self, x):
        b, h, w, c = x.shape
        x = self.in_proj(x)
        if self.gate:
            x, z = x.chunk(2, dim=-1)
        x = self.act(self.conv(nchw(x)))
        y = self.out_norm(cross_merge(self.ssm(cross_scan(x)), h, w)).reshape(b, h, w, -1)
        if self.gate:
            y = y * self.gate_act(z)
        return self.out_proj(y)


class _SSMConfig(BlockConfig):
    """Fields and costs the family shares; ``directions`` scans of ``_width`` channels each."""

    d_state: PositiveInt = 16
    dt_rank: PositiveInt | None = Field(None, description="rank of the delta projection; null: ceil(dim / 16)")
    conv_bias: bool = True
    bias: bool = Field(False, description="biases of in_proj and out_proj")
    directions: ClassVar[int] = 1

    def _width(self, dim: int) -> int:
        raise NotImplementedError

    def _ssm(self, dim: int, tokens: int) -> tuple[int, int]:
        """(params, FLOPs) of the SelectiveSSM: x_proj, dt_proj, dt bias, A, D, and the scan."""
        k, width, rank, n = self.directions, self._width(dim), auto_dt_rank(dim, self.dt_rank), self.d_state
        params = k * width * (rank + 2 * n) + k * rank * width + k * width * (n + 2)
        flops = k * tokens * width * (rank + 2 * n) + k * tokens * rank * width + scan_flops(1, k * width, tokens, n)
        return params, flops

    def workspace(self, shape: Shape, out: int) -> int:
        """The scan's per-token states (K * width * d_state), a few times over."""
        dim, h, w = shape
        return 3 * self.directions * self._width(dim) * self.d_state * h * w


@register("mixer", module=Mamba)
class MambaConfig(_SSMConfig):
    """Mamba (Gu and Dao, 2023) over the row-major flattened map."""

    type: Literal["mamba"] = "mamba"
    examples = (
        {},
        {'d_state': 4, 'expand': 1.5, 'dt_rank': 3, 'd_conv': 3, 'conv_bias': False, 'bias': True},
    )
    expand: PositiveFloat = 2.0
    d_conv: PositiveInt = 4

    def _width(self, dim: int) -> int:
        return scaled_width(dim, self.expand, "floor")

    def params(self, shape: Shape, out: int) -> int:
        dim, width, k = shape[0], self._width(shape[0]), self.directions
        proj = 3 * dim * width + (2 * width + dim) * self.bias
        conv = k * width * (self.d_conv + self.conv_bias)
        return proj + conv + self._ssm(dim, 1)[0]

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens, width = h * w, self._width(dim)
        return tokens * (3 * dim * width + self.directions * width * self.d_conv) + self._ssm(dim, tokens)[1]


@register("mixer", module=Vim)
class VimConfig(MambaConfig):
    """Vision Mamba (Zhu et al., ICML 2024) bidirectional mixer; ``average`` halves the sum (if_divide_out)."""

    type: Literal["vim"] = "vim"  # type: ignore[assignment]
    examples = (
        {},
        {'d_state': 8, 'expand': 1.0, 'average': False},
    )
    average: bool = True
    directions: ClassVar[int] = 2


@register("mixer", module=SS2D)
class SS2DConfig(_SSMConfig):
    """VMamba's SS2D (Liu et al., NeurIPS 2024). VMamba-T: d_state 1, ratio 1, no conv bias, no gate."""

    type: Literal["ss2d"] = "ss2d"
    examples = (
        {},
        {'d_state': 1, 'ratio': 1.0, 'conv_bias': False, 'gate': False},
        {'d_state': 2, 'ratio': 1.5, 'dt_rank': 4, 'd_conv': 5, 'bias': True},
    )
    ratio: PositiveFloat = Field(2.0, description="SSM width over block width (ssm_ratio)")
    d_conv: OddInt = 3
    gate: bool = Field(True, description="multiply by silu(z) from a second in_proj half; VMamba-T has none")
    directions: ClassVar[int] = 4

    def _width(self, dim: int) -> int:
        return scaled_width(dim, self.ratio, "floor")

    def params(self, shape: Shape, out: int) -> int:
        dim, width = shape[0], self._width(shape[0])
        in_width = (2 if self.gate else 1) * width
        proj = dim * in_width + width * dim + (in_width + dim) * self.bias
        conv = width * (self.d_conv**2 + self.conv_bias)
        return proj + conv + 2 * width + self._ssm(dim, 1)[0]

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens, width = h * w, self._width(dim)
        in_width = (2 if self.gate else 1) * width
        dense = tokens * (dim * in_width + width * self.d_conv**2 + width * dim)
        return dense + 5 * tokens * width + self._ssm(dim, tokens)[1]  # 5 per element: fvcore's LayerNorm
