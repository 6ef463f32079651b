"""Parameter-free token mixers: identity and pooling (PoolFormer)."""
from __future__ import annotations

from typing import Literal

from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, register
from blocks.validators import OddInt


class Identity(BlockModule):
    """No token mixing (IdentityFormer): what the rest of the block achieves alone."""

    def forward(self, x):
        return x


class Pooling(BlockModule):
    """Average pooling minus the input: the block's residual already adds the input back."""

    def __init__(self, pool_size=3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        nchw = x.permute(0, 3, 1, 2)
        if nchw.is_cuda:
            # CUDA's channels-last avg_pool2d backward dropped the padding offset (pytorch#188344, fixed in
            # 2026-06): on torch 2.11 this mixer's input gradient was off by a third on the H200. Only there: on
            # a CPU the channels-last kernel is right, and 9x faster than pooling a copy.
            nchw = nchw.contiguous()
        return self.pool(nchw).permute(0, 2, 3, 1) - x


class _FreeMixer(BlockConfig):
    def params(self, shape: Shape, out: int) -> int:
        return 0

    def flops(self, shape: Shape, out: int) -> int:
        return 0  # fvcore counts neither average pooling nor subtraction


@register("mixer", module=Identity)
class IdentityConfig(_FreeMixer):
    type: Literal["identity"] = "identity"


@register("mixer", module=Pooling)
class PoolingConfig(_FreeMixer):
    type: Literal["pooling"] = "pooling"
    pool_size: OddInt = 3
