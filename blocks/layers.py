"""Small layers and helpers shared by block families: layout views, layer scale, drop path, conv-BN,
TensorFlow's "same" padding, squeeze-excitation, and the one rule for a width scaled by a ratio."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


def same_padding(size, kernel, stride):
    """TensorFlow's "same" padding of one side of a map of ``size``: (before, after). The output has
    ceil(size / stride) positions; the padding that takes is split with the odd one after (right, bottom), so a
    stride-2 conv on an even side pads only after it."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_size(size, stride):
    """Spatial size after a conv padded as "same": ceil(size / stride), per dimension, whatever the kernel."""
    return tuple(-(-s // stride) for s in size)


class SameConv2d(nn.Conv2d):
    """A Conv2d padded as TensorFlow's "same" (``padding: same`` where a symmetric pad would differ: a strided
    or even kernel). The pad follows each input's size, so the module runs at any resolution; a side that
    needs none is not padded."""

    def __init__(self, in_chs, out_chs, kernel, stride=1, groups=1, bias=True):
        super().__init__(in_chs, out_chs, kernel, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x):
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def pads_each_input(padding, kernel, stride):
    """Whether a conv padded by ``padding`` is a SameConv2d, which pads each input into a copy: "same" with a
    stride or an even kernel. An odd kernel at stride 1 pads kernel // 2 on every side either way."""
    return padding == "same" and (stride > 1 or kernel % 2 == 0)


def padded_conv(in_chs, out_chs, kernel, stride=1, groups=1, bias=True, padding="symmetric"):
    """A kxk conv on NCHW maps padded by ``padding``: ``symmetric``, kernel // 2 on every side (PyTorch's habit),
    or ``same``, TensorFlow's rule (see ``pads_each_input``)."""
    if pads_each_input(padding, kernel, stride):
        return SameConv2d(in_chs, out_chs, kernel, stride=stride, groups=groups, bias=bias)
    return nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)


def conv_bn(in_chs, out_chs, kernel=1, stride=1, groups=1, act="identity", eps=1e-5, padding="symmetric"):
    """Conv (no bias: the BN after it has one) -> BatchNorm (``eps``) -> act, on NCHW maps; the conv padded as
    ``padded_conv`` says."""
    return nn.Sequential(
        padded_conv(in_chs, out_chs, kernel, stride=stride, groups=groups, bias=False, padding=padding),
        nn.BatchNorm2d(out_chs, eps=eps),
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
