"""Attention within windows: Swin's (shifted) windows, MaxViT's block and grid attention, with a learned
relative position bias; Swin's patch merging and a two-conv stem (MaxViT, NAT).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import nn

from blocks.attention import HeadsConfig, attention_heads
from blocks.base import BlockConfig, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import Act, create_act, nchw, nhwc
from blocks.mlp import hidden_width
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

# Annotations name role unions (Norm, ...): blocks/__init__.py resolves them once every block type is registered.

MASKED = -100.0  # Swin's additive mask between tokens of different regions in a shifted window


class HeadedAttentionConfig(HeadsConfig):
    """Heads with biases on qkv and on the output projection by default, as every published model of this
    family has them."""

    qkv_bias: bool = True
    proj_bias: bool = True


def fit_window(size, window, shift):
    """Swin's rule: a map no larger than the window is a single window, and is not shifted."""
    if min(size) <= window:
        return min(size), 0
    return window, shift


def partition(x, window, grid):
    """(B, H, W, C) -> (B, windows, window * window, C). Block: contiguous window x window tiles. Grid (MaxViT):
    a window x window grid of tokens spaced H // window apart, so each window spans the whole map."""
    b, h, w, c = x.shape
    if grid:
        x = x.reshape(b, window, h // window, window, w // window, c).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, -1, window * window, c)


def unpartition(x, window, grid, size):
    """Inverse of ``partition``."""
    (h, w), b, c = size, x.shape[0], x.shape[-1]
    x = x.reshape(b, h // window, w // window, window, window, c)
    x = x.permute(0, 3, 1, 4, 2, 5) if grid else x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window):
    """(N, N) index into a (2 * window - 1)^2 table of the offset between two tokens of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + window - 1
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(size, window, shift):
    """(windows, N, N) additive mask: after the cyclic shift, a window may hold tokens from regions that were
    not neighbours in the image; those pairs do not attend to each other."""
    h, w = size
    region = torch.zeros(1, h, w, 1)
    label = 0
    for rows in ((0, h - window), (h - window, h - shift), (h - shift, h)):
        for cols in ((0, w - window), (w - window, w - shift), (w - shift, w)):
            region[:, rows[0]:rows[1], cols[0]:cols[1]] = label
            label += 1
    labels = partition(region, window, False)[0, :, :, 0]
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, MASKED)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, plus a learned bias per head and relative offset.

    ``shift`` rolls the map before partitioning (Swin's shifted windows, with their mask); ``partition: grid``
    attends over a dilated grid instead of a local block (MaxViT). Windows and heads share one batch axis of
    ``F.scaled_dot_product_attention``, so the bias and mask (windows * heads, N, N) broadcast over images.
    """

    def __init__(self, dim, size, window, shift=0, partition="block", heads=None, head_dim=None, qkv_bias=True,
                 proj_bias=True, rel_pos=True):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.window, self.shift = fit_window(size, window, shift)
        self.grid = partition == "grid"
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.relative_position_bias_table = None
        if rel_pos:
            table = torch.zeros((2 * self.window - 1) ** 2, self.heads)
            self.relative_position_bias_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))
        self.register_buffer("relative_position_index", relative_position_index(self.window), persistent=False)
        mask = shifted_window_mask(size, self.window, self.shift) if self.shift else None
        self.register_buffer("shift_mask", mask, persistent=False)

    def attention_bias(self, windows, dtype):
        """(windows * heads, N, N) relative position bias plus shift mask, or None."""
        n = self.window**2
        bias = None
        if self.relative_position_bias_table is not None:
            table = self.relative_position_bias_table[self.relative_position_index.flatten()]
            bias = table.reshape(n, n, self.heads).permute(2, 0, 1)
        if self.shift_mask is not None:
            mask = self.shift_mask[:, None]
            bias = mask if bias is None else mask + bias
        if bias is None:
            return None
        return bias.expand(windows, self.heads, n, n).reshape(windows * self.heads, n, n).to(dtype)

    def forward(self, x):
        b, h, w, _ = x.shape
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        x = partition(x, self.window, self.grid)
        windows, n = x.shape[1:3]
        qkv = self.qkv(x).reshape(b, windows, n, 3, self.heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.reshape(3, b, windows * self.heads, n, self.head_dim)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attention_bias(windows, q.dtype))
        x = x.reshape(b, windows, self.heads, n, self.head_dim).transpose(2, 3).reshape(b, windows, n, -1)
        x = unpartition(self.proj(x), self.window, self.grid, (h, w))
        if self.shift:
            x = torch.roll(x, (self.shift, self.shift), (1, 2))
        return x


@register("mixer", module=WindowAttention)
class WindowAttentionConfig(HeadedAttentionConfig):
    """Swin: ``window: 7`` with ``shift: 0`` and ``shift: 3`` alternating in a stage pattern. MaxViT: ``partition:
    block`` then ``partition: grid``. A map no larger than ``window`` becomes one unshifted window (Swin's rule)."""

    type: Literal["window_attention"] = "window_attention"
    examples = (
        {'window': 4},
        {'window': 4, 'shift': 2, 'heads': 2},
        {'window': 4, 'partition': 'grid', 'rel_pos': False, 'qkv_bias': False, 'proj_bias': False},
        {'window': 8, 'shift': 4, 'head_dim': 16},  # the whole 8x8 test map: one window, no shift
    )
    window: PositiveInt = Field(description="window side; for partition: grid, the grid side")
    shift: NonNegativeInt = Field(0, description="cyclic shift before partitioning; Swin uses window // 2")
    partition: Literal["block", "grid"] = "block"
    rel_pos: bool = Field(True, description="learned relative position bias")

    @model_validator(mode="after")
    def _shift_within_window(self) -> WindowAttentionConfig:
        if self.shift >= self.window:
            raise ValueError(f"shift {self.shift} must be smaller than window {self.window}")
        if self.shift and self.partition == "grid":
            raise ValueError("grid attention already spans the whole map; give shift: 0")
        return self

    def fitted(self, shape: Shape) -> tuple[int, int]:
        """(window, shift) on this map."""
        return fit_window(shape[1:], self.window, self.shift)

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape, out)
        _, h, w = shape
        window, _ = self.fitted(shape)
        if h % window or w % window:
            what = "grid" if self.partition == "grid" else "window"
            raise ShapeError("window", f"{what} {window} does not divide the {h}x{w} feature map at this stage")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        window, _ = self.fitted(shape)
        heads, _ = self.heads_of(dim)
        return self.qkv_proj_params(dim) + self.rel_pos * heads * (2 * window - 1) ** 2

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        window, _ = self.fitted(shape)
        inner = self.inner(dim)
        return h * w * (4 * dim * inner + 2 * window**2 * inner)

    def workspace(self, shape: Shape, out: int) -> int:
        """qkv, plus the score matrix an unfused kernel materialises."""
        dim, h, w = shape
        window, _ = self.fitted(shape)
        heads, _ = self.heads_of(dim)
        return 3 * h * w * self.inner(dim) + heads * h * w * window**2


class PatchMerging(nn.Module):
    """Swin's downsampling: each 2x2 neighbourhood concatenated to 4C channels, normed, then a linear map to
    ``out_chs`` without bias. Odd sides are zero-padded."""

    def __init__(self, in_chs, out_chs, norm=None):
        super().__init__()
        self.norm = create("norm", norm or {"type": "layernorm", "eps": 1e-5}, dim=4 * in_chs)
        self.reduction = nn.Linear(4 * in_chs, out_chs, bias=False)

    def out_size(self, size):
        return ((size[0] + 1) // 2, (size[1] + 1) // 2)

    def forward(self, x):
        b, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = self.out_size((h, w))
        # Channel order as Swin's: (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1).
        x = x.reshape(b, h, 2, w, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h, w, 4 * c)
        return self.reduction(self.norm(x))


@register("downsample", module=PatchMerging)
class PatchMergingConfig(BlockConfig):
    type: Literal["patch_merging"] = "patch_merging"
    examples = (
        {},
        {'norm': {'type': 'layernorm', 'bias': False}},
    )
    norm: Norm = Field(default_factory=lambda: LayerNormConfig(eps=1e-5))

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, (shape[1] + 1) // 2, (shape[2] + 1) // 2)

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < 2:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for 2x2 patch merging")
        check_within("norm", self.norm, self._merged(shape))

    def _merged(self, shape: Shape) -> Shape:
        _, h, w = self.out_shape(shape, shape[0])
        return (4 * shape[0], h, w)

    def params(self, shape: Shape, out: int) -> int:
        merged = self._merged(shape)
        return self.norm.params(merged, merged[0]) + merged[0] * out

    def flops(self, shape: Shape, out: int) -> int:
        merged = self._merged(shape)
        return self.norm.flops(merged, merged[0]) + count(*merged) * out


class ConvPairStem(nn.Module):
    """conv (stride s1) -> [norm -> act] -> conv (stride s2) -> [norm], both convs kernel x kernel, the first
    to ``mid_ratio * out_chs`` channels. MaxViT: 3x3 s2, BatchNorm, GELU, 3x3 s1. NAT: 3x3 s2, 3x3 s2, LayerNorm."""

    def __init__(self, in_chs, out_chs, kernel=3, strides=(2, 2), mid_ratio=0.5, bias=True, mid_norm=None,
                 act="identity", post_norm=None):
        super().__init__()
        mid = hidden_width(out_chs, mid_ratio)
        self.conv1 = nn.Conv2d(in_chs, mid, kernel, stride=strides[0], padding=kernel // 2, bias=bias)
        self.mid_norm = create("norm", mid_norm, dim=mid) if mid_norm else nn.Identity()
        self.act = create_act(act)
        self.conv2 = nn.Conv2d(mid, out_chs, kernel, stride=strides[1], padding=kernel // 2, bias=bias)
        self.post_norm = create("norm", post_norm, dim=out_chs) if post_norm else nn.Identity()

    def out_size(self, size):
        for conv in (self.conv1, self.conv2):
            size = conv_out(size, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        return size

    def forward(self, x):
        x = self.act(self.mid_norm(nhwc(self.conv1(nchw(x)))))
        return self.post_norm(nhwc(self.conv2(nchw(x))))


@register("stem", module=ConvPairStem)
class ConvPairStemConfig(BlockConfig):
    type: Literal["conv_pair"] = "conv_pair"
    examples = (
        {},
        {'strides': [2, 1], 'mid_ratio': 1.0, 'mid_norm': 'batchnorm', 'act': 'gelu'},
        {'post_norm': 'layernorm', 'bias': False, 'kernel': 5},
    )
    kernel: OddInt = 3
    strides: tuple[PositiveInt, PositiveInt] = (2, 2)
    mid_ratio: PositiveFloat = Field(0.5, description="channels after the first conv, relative to the output")
    bias: bool = True
    mid_norm: Norm | None = None
    act: Act = "identity"
    post_norm: Norm | None = None

    def _shapes(self, shape: Shape, out: int) -> tuple[Shape, Shape]:
        mid = (hidden_width(out, self.mid_ratio), *conv_out(shape[1:], self.kernel, self.strides[0], self.kernel // 2))
        return mid, (out, *conv_out(mid[1:], self.kernel, self.strides[1], self.kernel // 2))

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return self._shapes(shape, out)[1]

    def check(self, shape: Shape, out: int) -> None:
        mid, end = self._shapes(shape, out)
        if min(shape[1:]) < self.strides[0] or min(mid[1:]) < self.strides[1]:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for two convs of stride "
                                   f"{self.strides[0]} and {self.strides[1]}")
        if self.mid_norm:
            check_within("mid_norm", self.mid_norm, mid)
        if self.post_norm:
            check_within("post_norm", self.post_norm, end)

    def params(self, shape: Shape, out: int) -> int:
        mid, end = self._shapes(shape, out)
        n = self.kernel**2 * (shape[0] * mid[0] + mid[0] * out) + (mid[0] + out) * self.bias
        n += self.mid_norm.params(mid, mid[0]) if self.mid_norm else 0
        return n + (self.post_norm.params(end, out) if self.post_norm else 0)

    def flops(self, shape: Shape, out: int) -> int:
        mid, end = self._shapes(shape, out)
        n = self.kernel**2 * (shape[0] * count(*mid) + mid[0] * count(*end))
        n += self.mid_norm.flops(mid, mid[0]) if self.mid_norm else 0
        return n + (self.post_norm.flops(end, out) if self.post_norm else 0)
