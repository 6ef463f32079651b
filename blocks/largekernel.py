"""Large-kernel depthwise convolution with parallel dilated small-kernel branches: UniRepLKNet's dilated
reparam block in its training-time form (each conv followed by BN, branches summed). At inference the
branches fold into the large kernel; here they are kept, as trained. Also the UniRepLKNet block around it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, create, register
from blocks.layers import DropPath, SqueezeExcite, nchw, nhwc, optional_scale, scaled_width
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Mixer


def dw_conv_bn(chs, kernel, dilation=1):
    """Depthwise conv keeping the map size, then BN (the conv's bias would fold into it)."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(chs, chs, kernel, padding=padding, dilation=dilation, groups=chs, bias=False),
        nn.BatchNorm2d(chs),
    )


class LargeKernelConv(BlockModule):
    """BN(dwconv_K(x)) + sum_i BN(dilated dwconv_k_i(x))."""

    def __init__(self, dim, kernel=13, branches=()):
        super().__init__()
        self.large = dw_conv_bn(dim, kernel)
        self.branches = nn.ModuleList(dw_conv_bn(dim, k, d) for k, d in branches)

    def forward(self, x):
        x = nchw(x)
        y = self.large(x)
        for branch in self.branches:
            y = y + branch(x)
        return nhwc(y)


@register("mixer", module=LargeKernelConv)
class LargeKernelConvConfig(BlockConfig):
    type: Literal["largekernel"] = "largekernel"
    examples = (
        {'kernel': 7, 'branches': [[5, 1], [3, 2], [3, 3]]},
        {'kernel': 5},
    )
    kernel: OddInt = 13
    branches: list[tuple[OddInt, PositiveInt]] = Field(
        default_factory=list, description="parallel (kernel, dilation) depthwise branches; UniRepLKNet's for "
                                          "kernel 13: [[5, 1], [7, 2], [3, 3], [3, 4], [3, 5]]")

    def check(self, shape: Shape, out: int) -> None:
        for i, (kernel, dilation) in enumerate(self.branches):
            span = dilation * (kernel - 1) + 1
            if span > self.kernel:
                raise ShapeError(f"branches[{i}]", f"kernel {kernel} at dilation {dilation} spans {span}, wider "
                                                   f"than the large kernel {self.kernel} it must fold into")

    def _kernel_areas(self) -> int:
        return self.kernel**2 + sum(k**2 for k, _ in self.branches)

    def params(self, shape: Shape, out: int) -> int:
        return shape[0] * (self._kernel_areas() + 2 * (1 + len(self.branches)))

    def flops(self, shape: Shape, out: int) -> int:
        return count(*shape) * (self._kernel_areas() + 2 * (1 + len(self.branches)))

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's GRN on channels-last maps: each channel scaled by its spatial L2 norm relative to the
    mean over channels, with a learned gain and bias, plus the input."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        norms = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        relative = norms / (norms.mean(dim=-1, keepdim=True) + self.eps)
        return x + self.gamma * (x * relative) + self.beta


class UniRepLKNetBlock(BlockModule):
    """mixer -> BN -> squeeze-excitation -> fc -> act -> GRN -> fc -> BN -> layer scale, one residual."""

    def __init__(self, dim, size, mixer, se=0.25, ratio=4.0, act="gelu", grn=True, layer_scale=1e-6,
                 drop_path=0.0):
        super().__init__()
        hidden = scaled_width(dim, ratio)
        self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.norm = nn.BatchNorm2d(dim)
        self.se = SqueezeExcite(dim, scaled_width(dim, se, "floor"), "relu") if se else nn.Identity()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = create_act(act)
        self.grn = GlobalResponseNorm(hidden) if grn else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=False)  # the BN after it has the bias
        self.out_norm = nn.BatchNorm2d(dim)
        self.layer_scale = optional_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        y = nhwc(self.se(self.norm(nchw(self.mixer(x)))))
        y = nhwc(self.out_norm(nchw(self.fc2(self.grn(self.act(self.fc1(y)))))))
        return x + self.drop_path(self.layer_scale(y))


@register("block", module=UniRepLKNetBlock)
class UniRepLKNetBlockConfig(BlockConfig):
    type: Literal["unireplknet"] = "unireplknet"
    examples = (
        {'mixer': {'type': 'largekernel', 'kernel': 5, 'branches': [[3, 2]]}},
        {'mixer': {'type': 'dwconv', 'kernel': 3, 'bias': False}, 'se': None, 'grn': False, 'layer_scale': None},
    )
    mixer: Mixer
    se: PositiveFloat | None = Field(0.25, description="squeeze-excitation width as a fraction of the block's")
    ratio: PositiveFloat = 4.0
    act: Act = "gelu"
    grn: bool = Field(True, description="global response norm after the MLP activation")
    layer_scale: float | None = 1e-6

    def check(self, shape: Shape, out: int) -> None:
        if self.se and scaled_width(shape[0], self.se, "floor") < 1:
            raise ShapeError("se", f"{self.se} of width {shape[0]} leaves no squeeze-excitation channel")
        super().check(shape, out)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        hidden = scaled_width(dim, self.ratio)
        n = self.mixer.params(shape, dim) + 4 * dim + 2 * dim * hidden + hidden + 2 * hidden * self.grn
        if self.se:
            reduced = scaled_width(dim, self.se, "floor")
            n += 2 * dim * reduced + reduced + dim
        return n + (dim if self.layer_scale is not None else 0)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        hidden = scaled_width(dim, self.ratio)
        n = self.mixer.flops(shape, dim) + 4 * count(*shape) + 2 * h * w * dim * hidden
        return n + (2 * dim * scaled_width(dim, self.se, "floor") if self.se else 0)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * shape[1] * shape[2] * scaled_width(shape[0], self.ratio)
