"""Attention within windows: Swin's (shifted) windows, MaxViT's block and grid attention, with a learned
relative position bias. (Swin's patch merging and the MaxViT/NAT stem are in blocks/stems.py.)
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from blocks.attention import HeadedAttentionConfig, attention_heads
from blocks.base import BlockModule, Shape, ShapeError, register

MASKED = -100.0  # Swin's additive mask between tokens of different regions in a shifted window


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


class WindowAttention(BlockModule):
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
