"""Large kernel attention (VAN): a large receptive field from a depthwise, a dilated depthwise and a 1x1 conv,
used as an attention map that multiplies its input."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt
from torch import nn

from blocks.base import BlockConfig, Shape, register
from blocks.layers import Act, create_act, nchw, nhwc
from blocks.validators import OddInt


class LargeKernelAttention(nn.Module):
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
