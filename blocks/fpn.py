"""Feature pyramid necks: FPN (Lin et al., "Feature Pyramid Networks for Object Detection", 2017) and PAFPN
(Liu et al., "Path Aggregation Network for Instance Segmentation", 2018), as MMDetection builds them.

FPN: a 1x1 lateral convolution per input level, a top-down path (nearest upsampling of the coarser level,
added), then a 3x3 output convolution per level. PAFPN adds a bottom-up path on FPN's outputs: a 3x3 stride-2
convolution of each level added to the next coarser one, then a 3x3 convolution per level but the finest.
``extra_levels`` add coarser levels above the last one (``extra``): ``pool``, a stride-2 1x1 max pool of the
last output (FPN's P6 for Faster R-CNN); ``conv_input``, a 3x3 stride-2 convolution of the last backbone level,
then of each extra level, with ReLU before every one but the first (RetinaNet's P6 = conv(C5), P7 = conv(relu(P6)),
as SEPC's RetinaNet uses it); ``conv_output``, the same on the last FPN output (MMDetection's ``on_output``).

A stride-2 convolution of an odd map gives ceil(h/2) rows, one more than a backbone level downsampled by floor
(a 2x2 patch merging of 333 rows gives 166); that extra row or column is dropped, as a detector's padding to a
multiple of the largest stride would do.
FLOPs as fvcore counts them: convolutions (no bias term), nearest upsampling one per output element; additions,
ReLU, max pooling and slicing count nothing.
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import nn

from blocks.base import NeckConfig, NeckModule, Shape, ShapeError, conv_out, count, register


def conv_cost(in_chs: int, out_chs: int, kernel: int, out_hw: tuple[int, int]) -> tuple[int, int]:
    """(params, FLOPs) of a dense k x k convolution with bias giving an ``out_hw`` map."""
    return kernel * kernel * in_chs * out_chs + out_chs, kernel * kernel * in_chs * out_chs * count(*out_hw)


def halved(size, kernel=3):
    """A stride-2 convolution's (or pool's) output size, padded to keep ceil(h/2)."""
    return conv_out(size, kernel, 2, kernel // 2)


def crop_to(x, size):
    """Drop the extra last row or column a stride-2 convolution gives over a floor-downsampled level."""
    return x[..., :size[0], :size[1]]


def check_halving(shapes: list[Shape], what: str) -> None:
    """Each level must be a stride-2 step below the one before (within the one row of ceil against floor)."""
    for i in range(1, len(shapes)):
        got, want = halved(shapes[i - 1][1:]), shapes[i][1:]
        if not all(0 <= g - w <= 1 for g, w in zip(got, want)):
            raise ShapeError(f"in_stages[{i}]", f"{what} needs each level at half the size of the one before, but "
                                                f"this stage's {want[0]}x{want[1]} map follows a "
                                                f"{shapes[i - 1][1]}x{shapes[i - 1][2]} one")


class FPN(NeckModule):
    """Lateral 1x1 convolutions, a top-down path of nearest upsampling and addition, 3x3 output convolutions,
    and ``extra_levels`` coarser levels."""

    def __init__(self, in_chs, in_stages, out_channels=256, extra_levels=0, extra="pool"):
        super().__init__()
        self.extra = extra
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_chs)
        self.outputs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_chs)
        convs = 0 if extra == "pool" else extra_levels
        first = in_chs[-1] if extra == "conv_input" else out_channels
        self.extras = nn.ModuleList(nn.Conv2d(first if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
                                    for i in range(convs))
        self.extra_levels = extra_levels

    def top_down(self, features):
        laterals = [conv(x) for conv, x in zip(self.laterals, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        return [conv(x) for conv, x in zip(self.outputs, laterals)]

    def add_extra_levels(self, outs, last_input):
        for i in range(self.extra_levels):
            if self.extra == "pool":
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            elif i == 0:
                outs.append(self.extras[0](last_input if self.extra == "conv_input" else outs[-1]))
            else:  # RetinaNet's P7 = conv(relu(P6))
                outs.append(self.extras[i](F.relu(outs[-1])))
        return outs

    def forward(self, features):
        return self.add_extra_levels(self.top_down(features), features[-1])


class PAFPN(FPN):
    """FPN, then PANet's bottom-up path: a stride-2 3x3 convolution of each level added to the next coarser
    one, and a 3x3 convolution on every level but the finest."""

    def __init__(self, in_chs, in_stages, out_channels=256, extra_levels=0, extra="pool"):
        super().__init__(in_chs, in_stages, out_channels, extra_levels, extra)
        self.downsamples = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
                                         for _ in in_chs[1:])
        self.bottom_up = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_chs[1:])

    def forward(self, features):
        outs = self.top_down(features)
        for i, (down, conv) in enumerate(zip(self.downsamples, self.bottom_up)):
            merged = outs[i + 1] + crop_to(down(outs[i]), outs[i + 1].shape[-2:])
            outs[i + 1] = conv(merged)
        return self.add_extra_levels(outs, features[-1])


@register("neck", module=FPN)
class FPNConfig(NeckConfig):
    type: Literal["fpn"] = "fpn"
    extra: Literal["pool", "conv_input", "conv_output"] = "pool"
    examples = ({"in_stages": [0, 1, 2], "out_channels": 16, "extra_levels": 2, "extra": "conv_input"},
                {"in_stages": [1, 2], "out_channels": 8, "extra_levels": 1},
                {"in_stages": [0, 1], "out_channels": 8, "extra_levels": 2, "extra": "conv_output"})

    def check_levels(self, shapes: list[Shape]) -> None:
        if len(shapes) != len(self.in_stages):
            raise ShapeError("in_stages", f"{len(self.in_stages)} stages named, {len(shapes)} levels given")

    def out_shapes(self, shapes: list[Shape]) -> list[Shape]:
        sizes = [s[1:] for s in shapes]
        for _ in range(self.extra_levels):
            sizes.append(halved(sizes[-1], 1 if self.extra == "pool" else 3))
        return [(self.out_channels, *size) for size in sizes]

    def _base_costs(self, shapes: list[Shape]) -> list[list[int]]:
        """[params, FLOPs] per input level of the lateral, top-down and output part."""
        c, costs = self.out_channels, []
        for i, (chs, h, w) in enumerate(shapes):
            lateral, output = conv_cost(chs, c, 1, (h, w)), conv_cost(c, c, 3, (h, w))
            upsample = c * h * w if i < len(shapes) - 1 else 0
            costs.append([lateral[0] + output[0], lateral[1] + output[1] + upsample])
        return costs

    def _extra_costs(self, shapes: list[Shape]) -> list[tuple[int, int]]:
        outs = self.out_shapes(shapes)[len(shapes):]
        if self.extra == "pool":
            return [(0, 0)] * len(outs)
        first = shapes[-1][0] if self.extra == "conv_input" else self.out_channels
        return [conv_cost(first if i == 0 else self.out_channels, self.out_channels, 3, out[1:])
                for i, out in enumerate(outs)]

    def level_costs(self, shapes: list[Shape]) -> list[tuple[int, int]]:
        return [(p, f) for p, f in self._base_costs(shapes)] + self._extra_costs(shapes)


@register("neck", module=PAFPN)
class PAFPNConfig(FPNConfig):
    type: Literal["pafpn"] = "pafpn"
    examples = ({"in_stages": [0, 1, 2], "out_channels": 16, "extra_levels": 1},)

    def check_levels(self, shapes: list[Shape]) -> None:
        super().check_levels(shapes)
        check_halving(shapes, "PAFPN's bottom-up path")

    def level_costs(self, shapes: list[Shape]) -> list[tuple[int, int]]:
        c, costs = self.out_channels, self._base_costs(shapes)
        for i in range(1, len(shapes)):
            down = conv_cost(c, c, 3, halved(shapes[i - 1][1:]))
            conv = conv_cost(c, c, 3, shapes[i][1:])
            costs[i][0] += down[0] + conv[0]
            costs[i][1] += down[1] + conv[1]
        return [(p, f) for p, f in costs] + self._extra_costs(shapes)
