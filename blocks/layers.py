"""Small layers shared by block families: activations, layer scale, drop path."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Act = Literal["gelu", "relu", "relu6", "silu", "hardswish", "sigmoid", "tanh", "star_relu", "squared_relu", "identity"]


def nchw(x):
    """Channels-last (B, H, W, C) viewed as NCHW in channels_last memory: no copy."""
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


class StarReLU(nn.Module):
    """s * relu(x)^2 + b with learnable scalars (MetaFormer baselines)."""

    def __init__(self, scale=1.0, bias=0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(scale)]))
        self.bias = nn.Parameter(torch.tensor([float(bias)]))

    def forward(self, x):
        return self.scale * torch.relu(x) ** 2 + self.bias


class SquaredReLU(nn.Module):
    def forward(self, x):
        return torch.relu(x) ** 2


def create_act(name):
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "silu":
        return nn.SiLU()
    if name == "hardswish":
        return nn.Hardswish()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "star_relu":
        return StarReLU()
    if name == "squared_relu":
        return SquaredReLU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def act_params(name: str) -> int:
    return 2 if name == "star_relu" else 0


class Scale(nn.Module):
    """Learnable per-channel scale, for layer scale and residual scale (channels last)."""

    def __init__(self, dim, init_value=1.0):
        super().__init__()
        self.scale = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x):
        return x * self.scale


def optional_scale(dim, init_value):
    return nn.Identity() if init_value is None else Scale(dim, init_value)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"
