"""Channel attention (DaViT's channel group attention): attention whose tokens are channels.

Each head's channels attend to each other over the whole image: the score matrix is head_dim x head_dim, built
from k^T v over every spatial token, so one layer has a global receptive field at a cost linear in the number of
tokens. DaViT alternates it with window attention (blocks/window_attention.py, ``rel_pos: false``), each in a
block with conv position encodings (blocks/conv_pos_enc.py).
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from blocks.attention import HeadedAttentionConfig, attention_heads
from blocks.base import BlockModule, Shape, register


class ChannelGroupAttention(BlockModule):
    """q, k, v by one linear layer; per head, A = softmax(scale * k^T v) mixes the head's channels and is applied
    to q (as DaViT does: q plays the value's part), then ``proj``. ``scale`` is head_dim^-0.5, as in DaViT."""

    def __init__(self, dim, heads=None, head_dim=None, qkv_bias=True, proj_bias=True):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)

    def forward(self, x):
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        scores = (k * self.scale).transpose(-1, -2) @ v  # (B, heads, head_dim, head_dim)
        y = q @ scores.softmax(dim=-1).transpose(-1, -2)  # (A q^T)^T: every token's channels, mixed by A
        return self.proj(y.transpose(1, 2).reshape(b, h, w, self.heads * self.head_dim))


@register("mixer", module=ChannelGroupAttention)
class ChannelGroupAttentionConfig(HeadedAttentionConfig):
    """DaViT-T: ``heads`` 3, 6, 12, 24 at widths 96 to 768 (head_dim 32, the default), with biases."""

    type: Literal["channel_attention"] = "channel_attention"
    examples = (
        {},
        {'heads': 4, 'qkv_bias': False, 'proj_bias': False},
        {'heads': 2, 'head_dim': 8},
    )

    def params(self, shape: Shape, out: int) -> int:
        return self.qkv_proj_params(shape[0])

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        _, head_dim = self.heads_of(dim)
        inner = self.inner(dim)
        # projections, then k^T v and A q^T: each tokens x head_dim x head_dim per head
        return h * w * (4 * dim * inner + 2 * head_dim * inner)

    def workspace(self, shape: Shape, out: int) -> int:
        """qkv; the score matrices are head_dim^2 per head, small beside it."""
        dim, h, w = shape
        heads, head_dim = self.heads_of(dim)
        return 3 * h * w * self.inner(dim) + heads * head_dim**2
