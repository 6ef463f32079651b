"""Convolutional projection attention (CvT, Wu et al., ICCV 2021): queries, keys and values are each a
depthwise conv + BatchNorm of the map, then a linear projection; keys and values come from a strided conv,
so each query attends over a map shrunk by ``kv_stride`` in each side. CvT's convolutional token embedding
between stages is the ``conv`` downsample with a LayerNorm after it (blocks/stems.py). CvT's class token is a
stage's ``class_token`` (nas/network.py's Stage holds it, the MetaFormer block passes it on): here it skips the
projection convs and leads q, k and v."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from blocks.attention import HeadedAttentionConfig, attention_heads
from blocks.base import BlockModule, Shape, conv_out, count, register
from blocks.layers import conv_bn, nchw, nhwc
from blocks.validators import OddInt


class ConvProjectionAttention(BlockModule):
    """Multi-head attention over conv-projected tokens: q from a stride-1 depthwise conv + BN, k and v from a
    ``kv_stride`` one, each followed by its own linear map (``proj_q``, ``proj_k``, ``proj_v``).

    ``qk_scale: width`` scales scores by 1/sqrt(heads * head_dim), as CvT's code does (``dim_out ** -0.5``);
    ``head`` by the usual 1/sqrt(head_dim)."""

    def __init__(self, dim, heads=None, head_dim=None, qkv_bias=True, proj_bias=True, kernel=3, kv_stride=2,
                 qk_scale="width"):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.scale = (inner if qk_scale == "width" else self.head_dim) ** -0.5
        self.conv_q = conv_bn(dim, dim, kernel, groups=dim)
        self.conv_k = conv_bn(dim, dim, kernel, stride=kv_stride, groups=dim)
        self.conv_v = conv_bn(dim, dim, kernel, stride=kv_stride, groups=dim)
        self.proj_q = nn.Linear(dim, inner, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, inner, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)

    def project(self, x, conv, linear, token=None):
        """(B, C, H, W) -> conv + BN -> (B, heads, tokens, head_dim); a (B, 1, 1, C) class token, if given,
        skips the conv and leads the tokens, as in CvT."""
        tokens = nhwc(conv(x)).flatten(1, 2)
        if token is not None:
            tokens = torch.cat([token.flatten(1, 2), tokens], 1)
        return linear(tokens).reshape(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, token=None):
        """The (B, H, W, C) map; with a class token, the (B, 1, 1 + H * W, C) sequence, token first."""
        b, h, w, _ = x.shape
        xc = nchw(x)
        q = self.project(xc, self.conv_q, self.proj_q, token)
        k = self.project(xc, self.conv_k, self.proj_k, token)
        v = self.project(xc, self.conv_v, self.proj_v, token)
        y = self.proj(F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2).flatten(2))
        return y.reshape(b, h, w, -1) if token is None else y[:, None]


@register("mixer", module=ConvProjectionAttention)
class ConvProjectionAttentionConfig(HeadedAttentionConfig):
    """CvT-13: ``heads`` 1, 3, 6 over its three stages (head_dim 64), 3x3 projections, keys and values at
    stride 2."""

    type: Literal["conv_attention"] = "conv_attention"
    examples = (
        {},
        {'heads': 2, 'kv_stride': 1, 'qk_scale': 'head'},
        {'head_dim': 8, 'kernel': 5, 'kv_stride': 3, 'qkv_bias': False, 'proj_bias': False},
    )
    kernel: OddInt = Field(3, description="side of the depthwise projection convs")
    kv_stride: PositiveInt = Field(2, description="stride of the key and value convs: keys and values come from "
                                                  "a map shrunk by this factor in each side")
    qk_scale: Literal["width", "head"] = Field("width", description="scores scaled by 1/sqrt(heads * head_dim), "
                                                                    "as CvT's code does, or by 1/sqrt(head_dim)")

    def keys(self, shape: Shape) -> int:
        """Tokens of the key and value map."""
        return count(*conv_out(shape[1:], self.kernel, self.kv_stride, self.kernel // 2))

    def _conv_bn_flops(self, dim: int, tokens: int) -> int:
        """A depthwise kernel x kernel conv, then an inference BatchNorm (scale and shift), over ``tokens``."""
        return tokens * dim * (self.kernel**2 + 2)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        return self.qkv_proj_params(dim) + 3 * dim * (self.kernel**2 + 2)  # + three depthwise convs and BNs

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens, keys, inner = h * w, self.keys(shape), self.inner(dim)
        convs = self._conv_bn_flops(dim, tokens) + 2 * self._conv_bn_flops(dim, keys)
        # proj_q and proj per query token, proj_k and proj_v per key token, then q k^T and attn v.
        return convs + 2 * tokens * dim * inner + 2 * keys * dim * inner + 2 * tokens * keys * inner

    def takes_class_token(self) -> bool:
        return True

    def class_token_flops(self, shape: Shape, out: int) -> int:
        """One more query (proj_q, proj) and one more key and value (proj_k, proj_v), none through a conv;
        q k^T and attn v grow from tokens x keys to (tokens + 1) x (keys + 1)."""
        dim, h, w = shape
        inner = self.inner(dim)
        return 4 * dim * inner + 2 * (h * w + self.keys(shape) + 1) * inner

    def workspace(self, shape: Shape, out: int) -> int:
        """q, k, v and the score matrix an unfused kernel materialises."""
        dim, h, w = shape
        heads, _ = self.heads_of(dim)
        keys = self.keys(shape)
        return (h * w + 2 * keys) * self.inner(dim) + heads * h * w * keys
