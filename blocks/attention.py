"""Attention token mixers."""
from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, register
from blocks.layers import nchw, nhwc
from blocks.validators import OddInt


def attention_heads(dim, heads, head_dim):
    """(heads, head_dim) from whichever the config gives; both given sets the inner width."""
    if heads is None:
        heads = dim // head_dim
    if head_dim is None:
        head_dim = dim // heads
    return heads, head_dim


class Attention(BlockModule):
    """Multi-head self-attention, global or within non-overlapping windows.

    Uses ``F.scaled_dot_product_attention`` so fused kernels run where the device has them.
    """

    def __init__(self, dim, heads=None, head_dim=None, qkv_bias=False, proj_bias=False, window=None,
                 local_conv=None):
        super().__init__()
        self.heads, self.head_dim = attention_heads(dim, heads, head_dim)
        inner = self.heads * self.head_dim
        self.window = window
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.local_conv = None
        if local_conv:
            self.local_conv = nn.Conv2d(inner, inner, local_conv, padding=local_conv // 2, groups=inner)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)

    def forward(self, x):
        b, h, w, c = x.shape
        tokens = self._windows(x) if self.window else x.reshape(b, h * w, c)
        n_seq, n_tok = tokens.shape[:2]
        inner = self.heads * self.head_dim
        q, k, v = self.qkv(tokens).reshape(n_seq, n_tok, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n_seq, n_tok, inner)
        y = self._to_map(y, b, h, w)
        if self.local_conv is not None:
            v = self._to_map(v.transpose(1, 2).reshape(n_seq, n_tok, inner), b, h, w)
            y = y + nhwc(self.local_conv(nchw(v)))
        return self.proj(y)

    def _windows(self, x):
        b, h, w, c = x.shape
        win = self.window
        return x.reshape(b, h // win, win, w // win, win, c).transpose(2, 3).reshape(-1, win * win, c)

    def _to_map(self, tokens, b, h, w):
        """(sequences, tokens, C) back to the (B, H, W, C) map, undoing any window partition."""
        win, c = self.window, tokens.shape[-1]
        if not win:
            return tokens.reshape(b, h, w, c)
        return tokens.reshape(b, h // win, w // win, win, win, c).transpose(2, 3).reshape(b, h, w, c)


class HeadsConfig(BlockConfig):
    """The heads of an attention mixer, shared by the attention family: give ``heads`` or ``head_dim``
    (default head_dim 32); both set the inner width."""

    heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    qkv_bias: bool = False
    proj_bias: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_head_dim(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("heads") is None and data.get("head_dim") is None:
            data = {**data, "head_dim": 32}
        return data

    def heads_of(self, dim: int) -> tuple[int, int]:
        return attention_heads(dim, self.heads, self.head_dim)

    def inner(self, dim: int) -> int:
        heads, head_dim = self.heads_of(dim)
        return heads * head_dim

    def check(self, shape: Shape, out: int) -> None:
        dim = shape[0]
        if self.head_dim is None and dim % self.heads:
            raise ShapeError("heads", f"{self.heads} does not divide width {dim}")
        if self.heads is None and dim % self.head_dim:
            raise ShapeError("head_dim", f"{self.head_dim} does not divide width {dim}")
        super().check(shape, out)

    def qkv_proj_params(self, dim: int) -> int:
        """Weights and biases of the qkv and output projections."""
        inner = self.inner(dim)
        return 4 * dim * inner + 3 * inner * self.qkv_bias + dim * self.proj_bias


class HeadedAttentionConfig(HeadsConfig):
    """Heads with biases on qkv and on the output projection by default, as every published model of this
    family has them."""

    qkv_bias: bool = True
    proj_bias: bool = True


@register("mixer", module=Attention)
class AttentionConfig(HeadsConfig):
    """``window`` restricts attention to non-overlapping windows."""

    type: Literal["attention"] = "attention"
    examples = (
        {},
        {'heads': 4, 'qkv_bias': True, 'proj_bias': True, 'window': 4},
        {'heads': 2, 'head_dim': 8},
        {'heads': 4, 'local_conv': 3, 'window': 4},
        {'head_dim': 16, 'local_conv': 5, 'qkv_bias': True},
    )
    window: PositiveInt | None = None
    local_conv: OddInt | None = Field(None, description="kernel of a depthwise conv over v added to the output "
                                                        "(SMT's local enhancement, CSWin's LePE)")

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape, out)
        _, h, w = shape
        if self.window and (h % self.window or w % self.window):
            raise ShapeError("window", f"{self.window} does not divide the {h}x{w} feature map at this stage")

    def params(self, shape: Shape, out: int) -> int:
        inner = self.inner(shape[0])
        local = inner * (self.local_conv**2 + 1) if self.local_conv else 0
        return self.qkv_proj_params(shape[0]) + local

    def workspace(self, shape: Shape, out: int) -> int:
        """qkv, plus the score matrix an unfused kernel materialises."""
        dim, h, w = shape
        tokens = h * w
        heads, _ = self.heads_of(dim)
        span = self.window**2 if self.window else tokens
        return 3 * tokens * self.inner(dim) + heads * tokens * span

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens = h * w
        span = self.window**2 if self.window else tokens  # keys each query attends to
        inner = self.inner(dim)
        local = inner * self.local_conv**2 if self.local_conv else 0
        return tokens * (4 * dim * inner + 2 * span * inner + local)
