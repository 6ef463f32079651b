"""VOLO (Yuan et al., TPAMI 2022): outlook attention, which predicts each window's attention weights from its
centre token by a linear layer instead of from query-key products; the convolutional patch embedding; and the
class-attention head with the token-labelling auxiliary classifier. (VOLO's later stages are plain MetaFormer
blocks with ``attention``; its downsample is a 2x2 ``conv`` with a position embedding.)
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act
from blocks.attention import HeadsConfig, attention_heads
from blocks.base import (
    BlockConfig,
    BlockModule,
    HeadModule,
    Shape,
    ShapeError,
    check_within,
    conv_out,
    count,
    create,
    register,
)
from blocks.layers import conv_bn, nchw, nhwc
from blocks.mlp import MlpConfig
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Norm


def pooled_side(side: int, stride: int) -> int:
    """Windows along one side: the ceil-mode average pool and the unfold both give ceil(side / stride)."""
    return math.ceil(side / stride)


class OutlookAttention(BlockModule):
    """For every ``stride``-pooled position, a linear layer predicts a (k*k, k*k) attention per head over the
    kxk window around it; the window's values are mixed by it and folded back, overlaps summed."""

    def __init__(self, dim, heads=None, head_dim=None, kernel=3, stride=2, qkv_bias=False, proj_bias=True):
        super().__init__()
        self.heads, head_dim = attention_heads(dim, heads, head_dim)
        self.kernel, self.stride = kernel, stride
        self.scale = head_dim**-0.5
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, kernel**4 * self.heads)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x):
        b, h, w, c = x.shape
        k, s, window = self.kernel, self.stride, self.kernel**2
        rows, cols = pooled_side(h, s), pooled_side(w, s)
        v = F.unfold(nchw(self.v(x)), k, padding=k // 2, stride=s)  # (B, C * k*k, windows)
        v = v.reshape(b, self.heads, c // self.heads, window, rows * cols).permute(0, 1, 4, 3, 2)
        pooled = nhwc(F.avg_pool2d(nchw(x), s, s, ceil_mode=True)) if s > 1 else x
        attn = self.attn(pooled).reshape(b, rows * cols, self.heads, window, window).transpose(1, 2)
        attn = (attn * self.scale).softmax(dim=-1)
        y = (attn @ v).permute(0, 1, 4, 3, 2).reshape(b, c * window, rows * cols)
        y = F.fold(y, (h, w), k, padding=k // 2, stride=s)
        return self.proj(nhwc(y))


@register("mixer", module=OutlookAttention)
class OutlookAttentionConfig(HeadsConfig):
    """VOLO-D1's stage 1: ``heads: 6, kernel: 3, stride: 2``. Heads split the width (default head_dim 32); the
    attention logits carry a bias, the value projection has none by default, the output projection has one."""

    type: Literal["outlook_attention"] = "outlook_attention"
    examples = (
        {'heads': 2, 'kernel': 3, 'stride': 2},
        {'heads': 4, 'kernel': 5, 'stride': 1, 'qkv_bias': True},
        {'heads': 1, 'kernel': 3, 'stride': 3},  # 8 is no multiple of 3: the last windows are partial
    )
    kernel: OddInt = 3
    stride: PositiveInt = Field(2, description="pooling of the positions that predict attention weights")
    qkv_bias: bool = Field(False, description="bias on the value projection")
    proj_bias: bool = True

    def _windows(self, shape: Shape) -> int:
        return pooled_side(shape[1], self.stride) * pooled_side(shape[2], self.stride)

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape, out)
        if self.inner(shape[0]) != shape[0]:
            raise ShapeError("head_dim", f"heads x head_dim must equal width {shape[0]}: outlook attention mixes "
                                         "the values in place")
        if self.stride > self.kernel:
            raise ShapeError("stride", f"{self.stride} is larger than kernel {self.kernel}: some tokens would be "
                                       "in no window")
        if min(shape[1:]) < self.stride:
            raise ShapeError("stride", f"{self.stride} is larger than the {shape[1]}x{shape[2]} feature map")

    def params(self, shape: Shape, out: int) -> int:
        dim, logits = shape[0], self.kernel**4 * self.heads_of(shape[0])[0]
        return 2 * dim * dim + dim * self.qkv_bias + dim * self.proj_bias + (dim + 1) * logits  # v, proj, logits

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        windows, k4 = self._windows(shape), self.kernel**4
        heads, _ = self.heads_of(dim)
        # v and proj per token; the attention logits per window; each window's (k*k, k*k) @ (k*k, C) mix
        return 2 * h * w * dim * dim + windows * dim * k4 * heads + windows * k4 * dim

    def workspace(self, shape: Shape, out: int) -> int:
        """The unfolded values and the attention weights."""
        windows, window = self._windows(shape), self.kernel**2
        return windows * window * (shape[0] + window * self.heads_of(shape[0])[0])


class ConvPatchEmbed(BlockModule):
    """kxk strided conv-BN-ReLU, ``convs`` more 3x3 conv-BN-ReLU at the hidden width, then a ``patch`` x ``patch``
    strided conv to the output width: VOLO's (and LV-ViT's) patch embedding, 8x8 in all."""

    def __init__(self, in_chs, out_chs, hidden=64, kernel=7, stride=2, convs=2, patch=4, act="relu"):
        super().__init__()
        layers = [conv_bn(in_chs, hidden, kernel, stride=stride, act=act)]
        layers += [conv_bn(hidden, hidden, 3, act=act) for _ in range(convs)]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(hidden, out_chs, patch, stride=patch)

    def out_size(self, size):
        first = self.convs[0][0]
        size = conv_out(size, first.kernel_size[0], first.stride[0], first.padding[0])
        return conv_out(size, self.proj.kernel_size[0], self.proj.stride[0], 0)

    def forward(self, x):
        return nhwc(self.proj(self.convs(nchw(x))))


@register("stem", module=ConvPatchEmbed)
class ConvPatchEmbedConfig(BlockConfig):
    type: Literal["conv_patch_embed"] = "conv_patch_embed"
    examples = (
        {'hidden': 8},
        {'hidden': 4, 'kernel': 3, 'convs': 0, 'patch': 2, 'act': 'gelu'},
    )
    hidden: PositiveInt = 64
    kernel: OddInt = 7
    stride: PositiveInt = 2
    convs: int = Field(2, ge=0, le=16, description="3x3 conv-BN-act layers after the first")
    patch: PositiveInt = Field(4, description="kernel and stride of the last conv")
    act: Act = "relu"

    def _sizes(self, shape: Shape) -> tuple[tuple[int, int], tuple[int, int]]:
        hidden = conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2)
        return hidden, conv_out(hidden, self.patch, self.patch, 0)

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *self._sizes(shape)[1])

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride * self.patch:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} image is too small for a stride-"
                                   f"{self.stride * self.patch} patch embedding")

    def _conv_bn_weights(self, in_chs: int) -> int:
        """Weights and BatchNorm affines of the conv-BN layers: also their multiply-accumulates per pixel."""
        return (in_chs * self.kernel**2 + 2) * self.hidden + self.convs * (self.hidden * 9 + 2) * self.hidden

    def params(self, shape: Shape, out: int) -> int:
        return self._conv_bn_weights(shape[0]) + self.hidden * self.patch**2 * out + out

    def flops(self, shape: Shape, out: int) -> int:
        hidden, end = self._sizes(shape)
        return self._conv_bn_weights(shape[0]) * count(*hidden) + self.hidden * self.patch**2 * out * count(*end)


class ClassAttention(nn.Module):
    """The class token's query attends over every token (itself included); only the class token is updated."""

    def __init__(self, dim, heads, qkv_bias=False):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens):
        b, n, c = tokens.shape
        k, v = self.kv(tokens).reshape(b, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = self.q(tokens[:, :1]).reshape(b, 1, self.heads, c // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
        return self.proj(y)


class ClassAttentionBlock(nn.Module):
    """CaiT's class-attention layer: cls + ClassAttention(norm(all tokens)), then cls + MLP(norm(cls))."""

    def __init__(self, dim, heads, mlp, norm, qkv_bias=False):
        super().__init__()
        self.norm1 = create("norm", norm, dim=dim)
        self.attn = ClassAttention(dim, heads, qkv_bias)
        self.norm2 = create("norm", norm, dim=dim)
        self.mlp = create("mlp", mlp, dim=dim)

    def forward(self, tokens):
        cls = tokens[:, :1] + self.attn(on_token_map(self.norm1, tokens))
        cls = cls + self.mlp(on_token_map(self.norm2, cls))
        return torch.cat((cls, tokens[:, 1:]), dim=1)


def on_token_map(norm, tokens):
    """A feature-map norm applied to (B, N, C) tokens through a (B, 1, N, C) view."""
    return norm(tokens[:, None])[:, 0]


class ClassAttentionHead(HeadModule):
    """A learned class token joins the last stage's tokens; ``depth`` class-attention layers update it; after a
    norm over every token, a linear layer classifies it. With ``aux_weight``, VOLO's token-labelling auxiliary
    classifier adds ``aux_weight`` x the per-class maximum of its logits over the other tokens."""

    def __init__(self, in_chs, num_classes, depth=2, heads=8, mlp_ratio=4.0, act="gelu", qkv_bias=False,
                 norm=None, aux_weight=0.5):
        super().__init__()
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, in_chs), std=0.02))
        mlp = {"type": "mlp", "ratio": mlp_ratio, "act": act}
        self.blocks = nn.ModuleList(ClassAttentionBlock(in_chs, heads, mlp, norm, qkv_bias) for _ in range(depth))
        self.norm = create("norm", norm, dim=in_chs)
        self.in_chs, self.aux_weight = in_chs, aux_weight
        self.reset(num_classes)

    def reset(self, num_classes):
        self.fc = nn.Linear(self.in_chs, num_classes) if num_classes else None
        self.aux_head = nn.Linear(self.in_chs, num_classes) if num_classes and self.aux_weight else None

    def forward(self, x, pre_logits=False):
        b, h, w, c = x.shape
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = on_token_map(self.norm, tokens)
        if pre_logits or self.fc is None:
            return tokens[:, 0]
        logits = self.fc(tokens[:, 0])
        if self.aux_head is not None:
            logits = logits + self.aux_weight * self.aux_head(tokens[:, 1:]).amax(dim=1)
        return logits


@register("head", module=ClassAttentionHead)
class ClassAttentionHeadConfig(BlockConfig):
    """VOLO-D1's head: ``depth: 2, heads: 12, mlp_ratio: 3``, LayerNorm (eps 1e-5), ``aux_weight: 0.5``.
    ``aux_weight: 0`` leaves the auxiliary classifier out (a CaiT-style head)."""

    type: Literal["class_attention"] = "class_attention"
    examples = (
        {'depth': 1, 'heads': 4, 'mlp_ratio': 2.0},
        {'heads': 2, 'aux_weight': 0.0, 'qkv_bias': True, 'norm': {'type': 'layernorm', 'eps': 1e-6}},
    )
    depth: PositiveInt = Field(2, le=64, description="class-attention layers")
    heads: PositiveInt = 8
    mlp_ratio: PositiveFloat = 4.0
    act: Act = "gelu"
    qkv_bias: bool = False
    norm: Norm = Field(default_factory=lambda: LayerNormConfig(eps=1e-5))
    aux_weight: NonNegativeFloat = Field(0.5, description="weight of the token-labelling classifier's maximum; "
                                                          "0: no auxiliary classifier")

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, 1, 1)

    def _mlp(self) -> MlpConfig:
        return MlpConfig(ratio=self.mlp_ratio, act=self.act)

    def check(self, shape: Shape, out: int) -> None:
        if shape[0] % self.heads:
            raise ShapeError("heads", f"{self.heads} does not divide width {shape[0]}")
        check_within("norm", self.norm, shape)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        attention = 3 * dim * dim + 3 * dim * self.qkv_bias + dim * dim + dim
        block = 2 * self.norm.params(shape, dim) + attention + self._mlp().params(shape, dim)
        classifiers = (dim + 1) * out * (1 + (self.aux_weight > 0)) if out else 0
        return dim + self.depth * block + self.norm.params(shape, dim) + classifiers

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens = h * w + 1  # the class token too
        every, one = (dim, 1, tokens), (dim, 1, 1)
        # norm1 and k, v over every token; q, the attention, proj, norm2 and the MLP for the class token only
        attention = 2 * tokens * dim * dim + dim * dim + 2 * tokens * dim + dim * dim
        block = self.norm.flops(every, dim) + attention + self.norm.flops(one, dim) + self._mlp().flops(one, dim)
        n = self.depth * block + self.norm.flops(every, dim)
        if out:
            n += dim * out + (h * w * dim * out if self.aux_weight else 0)
        return n

    def workspace(self, shape: Shape, out: int) -> int:
        """k and v of every token, and the auxiliary logits."""
        tokens = shape[1] * shape[2] + 1
        return max(2 * tokens * shape[0], (tokens - 1) * out if self.aux_weight else 0)
