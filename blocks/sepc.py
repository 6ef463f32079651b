"""SEPC's pyramid convolution (Wang et al., "Scale-Equalizing Pyramid Convolution for Object Detection",
CVPR 2020), after an FPN, as the paper uses it.

A pyramid convolution (PConv) is a 3-D convolution over (level, height, width) with a kernel of 3 levels:
each output level l sums a 3x3 convolution of level l, a stride-2 3x3 convolution of the finer level l-1, and
a 3x3 convolution of the coarser level l+1 upsampled bilinearly to level l's size. The three kernels are
shared by every level. Integrated BatchNorm (iBN) normalises all levels with one BatchNorm whose statistics
are gathered over every level together, then ReLU. ``pconvs`` PConvs are stacked (4 in the paper).
The deformable variant (SEPC's full form, deformable kernels on the coarser levels) is not built here; this is
the plain PConv with iBN.

FLOPs as fvcore counts them: convolutions, bilinear upsampling four per output element, BatchNorm two per
element at inference; additions, ReLU and the reshapes iBN uses count nothing.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from blocks.base import NeckModule, Shape, count, register
from blocks.fpn import FPN, FPNConfig, check_halving, conv_cost, crop_to, halved


def integrated_batch_norm(levels, bn):
    """One BatchNorm over every level at once, so training statistics are shared across the pyramid."""
    n, c = levels[0].shape[:2]
    sizes = [x.shape[-2:] for x in levels]
    flat = bn(torch.cat([x.reshape(n, c, 1, -1) for x in levels], dim=-1))
    parts = torch.split(flat, [h * w for h, w in sizes], dim=-1)
    return [part.reshape(n, c, h, w) for part, (h, w) in zip(parts, sizes)]


class PyramidConv(nn.Module):
    """One PConv over all levels: kernels for the same, the finer (stride 2) and the coarser level, shared
    across levels, then iBN (when ``ibn``) and ReLU."""

    def __init__(self, chs, ibn=True):
        super().__init__()
        self.same = nn.Conv2d(chs, chs, 3, padding=1)
        self.finer = nn.Conv2d(chs, chs, 3, stride=2, padding=1)
        self.coarser = nn.Conv2d(chs, chs, 3, padding=1)
        self.norm = nn.BatchNorm2d(chs) if ibn else None

    def forward(self, levels):
        outs = []
        for i, x in enumerate(levels):
            y = self.same(x)
            if i > 0:
                y = y + crop_to(self.finer(levels[i - 1]), y.shape[-2:])
            if i < len(levels) - 1:
                y = y + F.interpolate(self.coarser(levels[i + 1]), size=y.shape[-2:], mode="bilinear",
                                      align_corners=False)
            outs.append(y)
        if self.norm is not None:
            outs = integrated_batch_norm(outs, self.norm)
        return [F.relu(y) for y in outs]


class SEPC(NeckModule):
    """An FPN, then ``pconvs`` pyramid convolutions over its levels (extra levels included)."""

    def __init__(self, in_chs, in_stages, out_channels=256, extra_levels=0, extra="pool", pconvs=4, ibn=True):
        super().__init__()
        self.fpn = FPN(in_chs, in_stages, out_channels, extra_levels, extra)
        self.pconvs = nn.Sequential(*(PyramidConv(out_channels, ibn) for _ in range(pconvs)))

    def forward(self, features):
        return self.pconvs(self.fpn(features))


@register("neck", module=SEPC)
class SEPCConfig(FPNConfig):
    type: Literal["sepc"] = "sepc"
    pconvs: PositiveInt = 4
    ibn: bool = True
    examples = ({"in_stages": [0, 1, 2], "out_channels": 16, "extra_levels": 2, "extra": "conv_input", "pconvs": 2},
                {"in_stages": [1, 2], "out_channels": 8, "extra_levels": 1, "pconvs": 1, "ibn": False})

    def check_levels(self, shapes: list[Shape]) -> None:
        super().check_levels(shapes)
        check_halving(shapes, "SEPC's pyramid convolution")

    def level_costs(self, shapes: list[Shape]) -> list[tuple[int, int]]:
        c, costs = self.out_channels, super().level_costs(shapes)
        sizes = [out[1:] for out in self.out_shapes(shapes)]
        conv = conv_cost(c, c, 3, (1, 1))[1]  # FLOPs per output position
        levels = []
        for i, size in enumerate(sizes):
            flops = conv * count(*size)
            if i > 0:
                flops += conv * count(*halved(sizes[i - 1]))
            if i < len(sizes) - 1:
                flops += conv * count(*sizes[i + 1]) + 4 * c * count(*size)
            if self.ibn:
                flops += 2 * c * count(*size)
            params, fpn_flops = costs[i]
            levels.append((params, fpn_flops + self.pconvs * flops))
        return levels

    def shared_params(self, shapes: list[Shape]) -> int:
        per_pconv = 3 * conv_cost(self.out_channels, self.out_channels, 3, (1, 1))[0]
        return self.pconvs * (per_pconv + (2 * self.out_channels if self.ibn else 0))
