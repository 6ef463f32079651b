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


def scaled_width(width: int, ratio: float, rounding: str = "nearest") -> int:
    """``width * ratio`` as a channel count, the one rule for every "width x ratio" in blocks/.

    ``nearest`` rounds half to even: MLP and head hidden widths, separable-conv, MBConv and bottleneck widths,
    token-MLP widths, the conv_pair stem (MobileNetV2's int(round(inp * t))). ``floor`` takes int() of the
    product, as the reference code does for MambaOut's hidden and conv widths, Mamba's and VMamba's inner
    widths, InceptionNeXt's branch width, the MambaOut stem's first width (out // 2) and squeeze-excitation
    widths (UniRepLKNet's dim // 4). Either rule alone keeps every zoo genome's counts, whose products are
    whole; but elsewhere (expansion 2.5 on width 35, se 0.3 on width 33) one rule would change a block's
    widths, so its params, FLOPs and state-dict shapes, and saved weights would no longer load. Hence two.
    """
    if rounding not in ("nearest", "floor"):
        raise ValueError(f"rounding is 'nearest' or 'floor', not {rounding!r}")
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
