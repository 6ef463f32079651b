"""Neighborhood attention (NAT) and its dilated form (DiNAT), in plain torch.

Each query attends to the ``kernel x kernel`` keys around it, taken every ``dilation`` pixels. At borders the
window is clamped inside the map (NATTEN's definition), so every query sees exactly ``kernel**2`` keys. The
neighbours are gathered by precomputed indices; the attention itself is one ``F.scaled_dot_product_attention``
call with a single query per row, so its cost is counted by the SDPA handle.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from blocks.attention import HeadedAttentionConfig, attention_heads
from blocks.base import BlockModule, Shape, ShapeError, register
from blocks.validators import OddInt


def line_neighbours(length, kernel, dilation):
    """For each position of a line: its ``kernel`` key positions, and their offsets into a relative position
    table of ``2 * kernel - 1`` entries. Positions are grouped by ``position % dilation``; within its group a
    query's window is centred on it, then clamped to the group's ends."""
    keys, offsets = [], []
    half = kernel // 2
    for i in range(length):
        group, pos = i % dilation, i // dilation
        group_length = (length - group + dilation - 1) // dilation
        start = min(max(pos - half, 0), group_length - kernel)
        keys.append([group + dilation * (start + j) for j in range(kernel)])
        offsets.append([start + j - pos + kernel - 1 for j in range(kernel)])
    return torch.tensor(keys), torch.tensor(offsets)


def neighbour_indices(size, kernel, dilation):
    """(H*W, kernel**2) flat key positions of each query, and the same-shaped flat index into a
    (2 * kernel - 1)^2 relative position table."""
    (h, w), span = size, 2 * kernel - 1
    rows, row_offsets = line_neighbours(h, kernel, dilation)
    cols, col_offsets = line_neighbours(w, kernel, dilation)
    keys = rows[:, None, :, None] * w + cols[None, :, None, :]
    offsets = row_offsets[:, None, :, None] * span + col_offsets[None, :, None, :]
    return keys.reshape(h * w, kernel**2), offsets.reshape(h * w, kernel**2)


class NeighborhoodAttention(BlockModule):
    """Multi-head attention over each token's (dilated) neighbourhood, with NAT's relative position bias."""

    def __init__(self, dim, size, kernel=7, dilation=1, heads=None, head_dim=None, qkv_bias=True, proj_bias=True,
                 rel_pos=True):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.rpb = None
        if rel_pos:
            table = torch.zeros(self.heads, 2 * kernel - 1, 2 * kernel - 1)
            self.rpb = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))
        keys, offsets = neighbour_indices(size, kernel, dilation)
        self.register_buffer("key_index", keys, persistent=False)
        self.register_buffer("bias_index", offsets, persistent=False)

    def forward(self, x):
        b, h, w, _ = x.shape
        n, span = h * w, self.key_index.shape[1]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # Heads and queries share SDPA's batch axes: (B, heads * N, 1, d) against (B, heads * N, span, d).
        q = q.reshape(b, self.heads * n, 1, self.head_dim)
        k = k[:, :, self.key_index].reshape(b, self.heads * n, span, self.head_dim)
        v = v[:, :, self.key_index].reshape(b, self.heads * n, span, self.head_dim)
        bias = None
        if self.rpb is not None:
            bias = self.rpb.flatten(1)[:, self.bias_index].reshape(self.heads * n, 1, span).to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.reshape(b, self.heads, n, self.head_dim).transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(x)


@register("mixer", module=NeighborhoodAttention)
class NeighborhoodAttentionConfig(HeadedAttentionConfig):
    """NAT: ``kernel: 7``. DiNAT alternates ``dilation: 1`` with a dilation that makes ``kernel * dilation``
    span the map (a stage pattern). The map must be at least ``kernel * dilation`` on each side."""

    type: Literal["neighborhood_attention"] = "neighborhood_attention"
    examples = (
        {},
        {'kernel': 3, 'dilation': 2, 'heads': 2},
        {'kernel': 5, 'rel_pos': False, 'qkv_bias': False, 'proj_bias': False},
    )
    kernel: OddInt = 7
    dilation: PositiveInt = 1
    rel_pos: bool = Field(True, description="learned relative position bias")

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape, out)
        _, h, w = shape
        need = self.kernel * self.dilation
        if min(h, w) < need:
            field = "dilation" if self.dilation > 1 else "kernel"
            raise ShapeError(field, f"kernel {self.kernel} at dilation {self.dilation} needs a feature map of at "
                                    f"least {need}x{need}; this stage's is {h}x{w}")

    def params(self, shape: Shape, out: int) -> int:
        heads, _ = self.heads_of(shape[0])
        return self.qkv_proj_params(shape[0]) + self.rel_pos * heads * (2 * self.kernel - 1) ** 2

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        inner = self.inner(dim)
        return h * w * (4 * dim * inner + 2 * self.kernel**2 * inner)

    def workspace(self, shape: Shape, out: int) -> int:
        """qkv, and the gathered keys and values."""
        dim, h, w = shape
        return h * w * self.inner(dim) * (3 + 2 * self.kernel**2)
