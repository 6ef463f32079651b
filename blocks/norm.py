"""Norm layers. Feature maps between blocks are channels-last: (B, H, W, C)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, register


class LayerNorm(BlockModule):
    """LayerNorm over channels, with an optional bias (MetaFormer drops it)."""

    def __init__(self, dim, eps=1e-6, bias=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class GroupNorm(BlockModule):
    """GroupNorm on channels-last maps; one group normalises over (C, H, W) as in PoolFormer."""

    def __init__(self, dim, groups=1, eps=1e-5, bias=True):
        super().__init__()
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        if torch.is_grad_enabled() and not x.requires_grad:
            # torch 2.13's CPU backward on a channels-last view crashes the process when only the weights want a
            # gradient; a copy only then, as it makes the forward 5-7x slower on a CPU
            x = x.contiguous()
        x = F.group_norm(x, self.groups, self.weight, self.bias, self.eps)
        return x.permute(0, 2, 3, 1)


class BatchNorm(BlockModule, nn.BatchNorm2d):
    """BatchNorm2d on channels-last maps."""

    def __init__(self, dim, eps=1e-5, momentum=0.1):
        super().__init__(dim, eps=eps, momentum=momentum)

    def forward(self, x):
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class _AffineNormConfig(BlockConfig):
    """A per-channel weight, and a bias unless ``bias: false``."""

    bias: bool = True

    def params(self, shape: Shape, out: int) -> int:
        return shape[0] * (2 if self.bias else 1)

    def flops(self, shape: Shape, out: int) -> int:
        return 5 * count(*shape)  # fvcore's estimate for affine norms


@register("norm", module=LayerNorm)
class LayerNormConfig(_AffineNormConfig):
    type: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-6

    def takes_class_token(self) -> bool:
        return True  # token-wise


@register("norm", module=GroupNorm)
class GroupNormConfig(_AffineNormConfig):
    type: Literal["groupnorm"] = "groupnorm"
    examples = (
        {},
        {'groups': 4, 'bias': False},
    )
    groups: PositiveInt = 1
    eps: PositiveFloat = 1e-5

    def check(self, shape: Shape, out: int) -> None:
        if shape[0] % self.groups:
            raise ShapeError("groups", f"{self.groups} does not divide width {shape[0]}")


@register("norm", module=BatchNorm)
class BatchNormConfig(BlockConfig):
    type: Literal["batchnorm"] = "batchnorm"
    eps: PositiveFloat = 1e-5
    momentum: float = Field(0.1, ge=0.0, le=1.0)

    def params(self, shape: Shape, out: int) -> int:
        return 2 * shape[0]

    def flops(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape)  # inference: folded scale and shift
