"""Large-kernel depthwise convolution with parallel dilated small-kernel branches: UniRepLKNet's dilated
reparam block in its training-time form (each conv followed by BN, branches summed). At inference the
branches fold into the large kernel; here they are kept, as trained."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt
from torch import nn

from blocks.base import BlockConfig, Shape, ShapeError, count, register
from blocks.conv import nchw, nhwc
from blocks.validators import OddInt


def dw_conv_bn(chs, kernel, dilation=1):
    """Depthwise conv keeping the map size, then BN (the conv's bias would fold into it)."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(chs, chs, kernel, padding=padding, dilation=dilation, groups=chs, bias=False),
        nn.BatchNorm2d(chs),
    )


class LargeKernelConv(nn.Module):
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
