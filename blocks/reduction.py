"""Spatial-reduction attention (PVT, PVT v2): full-resolution queries against keys and values taken from a
map shrunk by a strided conv, so attention over a large early-stage map stays affordable."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from blocks.attention import HeadedAttentionConfig, attention_heads
from blocks.base import BlockModule, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import nchw, nhwc
from blocks.norm import LayerNormConfig

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Norm


class ReductionAttention(BlockModule):
    """q from every token; k, v from a ``sr_ratio x sr_ratio``-strided conv of the map, then a norm.
    ``sr_ratio: 1`` is plain global attention (no conv, no norm), as in PVT's last stage."""

    def __init__(self, dim, sr_ratio=1, heads=None, head_dim=None, qkv_bias=True, proj_bias=True, norm=None):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.sr = self.norm = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = create("norm", norm or {"type": "layernorm", "eps": 1e-5}, dim=dim)

    def forward(self, x):
        b, h, w, _ = x.shape
        q = self.q(x).reshape(b, h * w, self.heads, self.head_dim).transpose(1, 2)
        if self.sr is not None:
            x = self.norm(nhwc(self.sr(nchw(x))))
        kv = self.kv(x).reshape(b, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


@register("mixer", module=ReductionAttention)
class ReductionAttentionConfig(HeadedAttentionConfig):
    """PVT v2-B2: ``sr_ratio`` 8, 4, 2, 1 over the four stages, head_dim 64."""

    type: Literal["reduction_attention"] = "reduction_attention"
    examples = (
        {},
        {'sr_ratio': 2, 'heads': 2},
        {'sr_ratio': 4, 'qkv_bias': False, 'proj_bias': False, 'norm': {'type': 'layernorm', 'bias': False}},
    )
    sr_ratio: PositiveInt = Field(1, description="kernel and stride of the conv that shrinks keys and values")
    norm: Norm = Field(default_factory=lambda: LayerNormConfig(eps=1e-5), description="after the conv")

    def reduced(self, shape: Shape) -> Shape:
        """The key/value map."""
        return (shape[0], *conv_out(shape[1:], self.sr_ratio, self.sr_ratio, 0))

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape, out)
        _, h, w = shape
        if min(h, w) < self.sr_ratio:
            raise ShapeError("sr_ratio", f"{self.sr_ratio} is larger than the {h}x{w} feature map at this stage")
        if self.sr_ratio > 1:
            check_within("norm", self.norm, self.reduced(shape))

    def children(self):
        return super().children() if self.sr_ratio > 1 else ()

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = self.qkv_proj_params(dim)
        if self.sr_ratio > 1:
            n += dim * dim * self.sr_ratio**2 + dim + self.norm.params(self.reduced(shape), dim)
        return n

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        inner, reduced = self.inner(dim), self.reduced(shape)
        keys = reduced[1] * reduced[2]
        n = h * w * 2 * dim * inner + keys * 2 * dim * inner + 2 * h * w * keys * inner  # q, proj; kv; attention
        if self.sr_ratio > 1:
            n += count(*reduced) * dim * self.sr_ratio**2 + self.norm.flops(reduced, dim)
        return n

    def workspace(self, shape: Shape, out: int) -> int:
        """q, k, v and the score matrix an unfused kernel materialises."""
        dim, h, w = shape
        heads, _ = self.heads_of(dim)
        reduced = self.reduced(shape)
        keys = reduced[1] * reduced[2]
        return (h * w + 2 * keys) * self.inner(dim) + heads * h * w * keys
