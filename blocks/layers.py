"""Small layers and helpers shared by block families: layout views, layer scale, drop path, conv-BN,
squeeze-excitation, and the one rule for a width scaled by a ratio."""
from __future__ import annotations

import torch
from torch import nn

from blocks.activations import create_act


def nchw(x):
    """Channels-last (B, H, W, C) viewed as NCHW in channels_last memory: no copy."""
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


def scaled_width(width, ratio, rounding="nearest"):
    """``width * ratio`` as a channel count: every "width x ratio" in blocks/ goes through here.

    Two roundings, because the published models differ and a block must keep the widths (and so the params and
    FLOPs) of the models it reproduces: ``nearest`` (round half to even) for MLP hidden widths, expansions and
    bottleneck widths; ``floor`` where the reference code takes ``int()`` of the product and the product is not
    whole: MambaOut's hidden width (int(8/3 * 96) = 255), VMamba's and Mamba's SSM widths, squeeze-excitation
    widths, InceptionNeXt's branch width, the MambaOut stem's first width."""
    scaled = width * ratio
    return int(scaled) if rounding == "floor" else round(scaled)


def conv_bn(in_chs, out_chs, kernel=1, stride=1, groups=1, act="identity"):
    """Conv (no bias: the BN after it has one) -> BatchNorm -> act, on NCHW maps."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
        create_act(act),
    )


class SqueezeExcite(nn.Module):
    """Channel gate from globally pooled features (NCHW): fc -> act -> fc -> sigmoid."""

    def __init__(self, chs, reduced, act="silu"):
        super().__init__()
        self.reduce = nn.Linear(chs, reduced)
        self.act = create_act(act)
        self.expand = nn.Linear(reduced, chs)

    def forward(self, x):
        gate = torch.sigmoid(self.expand(self.act(self.reduce(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


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
