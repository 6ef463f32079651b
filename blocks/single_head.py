"""SHViT (Yun and Ro, CVPR 2024): single-head attention on a channel split of the tokens, conv-BN blocks, a
16x16 patchify stem of stride-2 convs, and a downsample that wraps an SE-gated inverted bottleneck between two
conv blocks. Every conv is followed by BatchNorm (``conv_bn``), so inference folds them away.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import DropPath, SqueezeExcite, conv_bn, nchw, nhwc, scaled_width
from blocks.norm import GroupNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Mixer

# SHViT's split: attention sees 1 / 4.67 of the channels (the paper's r); the rest pass through untouched.
SHVIT_PARTIAL_RATIO = 1 / 4.67


def partial_width(dim: int, partial_dim: int | None, partial_ratio: float) -> int:
    """Channels the single head attends over: ``partial_dim`` when given, else ``dim * partial_ratio``."""
    return partial_dim if partial_dim is not None else scaled_width(dim, partial_ratio)


class SingleHeadAttention(BlockModule):
    """SHSA: the first ``partial_dim`` channels are GroupNorm-ed, projected to q, k (``qk_dim`` each) and v
    (``partial_dim``) by a 1x1 conv-BN, attended by one head over all tokens; the result is concatenated with the
    untouched channels and mixed by ReLU -> 1x1 conv-BN."""

    def __init__(self, dim, qk_dim=16, partial_dim=None, partial_ratio=SHVIT_PARTIAL_RATIO):
        super().__init__()
        self.qk_dim = qk_dim
        self.partial_dim = partial_width(dim, partial_dim, partial_ratio)
        self.dim = dim
        self.pre_norm = nn.GroupNorm(1, self.partial_dim)
        # q, k and v have unequal widths, so this is not a ``qkv`` layer for the supernet (FUSED_PROJECTIONS).
        self.to_qkv = conv_bn(self.partial_dim, 2 * qk_dim + self.partial_dim)
        self.act = nn.ReLU()
        self.proj = conv_bn(dim, dim)

    def forward(self, x):
        b, h, w, _ = x.shape
        attended, passed = torch.split(nchw(x), [self.partial_dim, self.dim - self.partial_dim], dim=1)
        qkv = self.to_qkv(self.pre_norm(attended)).flatten(2).transpose(1, 2)[:, None]  # (B, 1, N, 2qk + p)
        q, k, v = torch.split(qkv, [self.qk_dim, self.qk_dim, self.partial_dim], dim=-1)
        attended = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, self.partial_dim, h, w)
        return nhwc(self.proj(self.act(torch.cat((attended, passed), dim=1))))


@register("mixer", module=SingleHeadAttention)
class SingleHeadAttentionConfig(BlockConfig):
    """One attention head over ``partial_dim`` channels (default: width / 4.67, SHViT's r)."""

    type: Literal["single_head_attention"] = "single_head_attention"
    examples = (
        {'qk_dim': 8, 'partial_dim': 12},
        {'partial_ratio': 1.0},
    )
    qk_dim: PositiveInt = Field(16, description="width of the query and key")
    partial_dim: PositiveInt | None = Field(None, description="channels attended; default: width * partial_ratio")
    partial_ratio: PositiveFloat = Field(SHVIT_PARTIAL_RATIO, le=1.0, description="used when partial_dim is not given")

    def partial(self, dim: int) -> int:
        return partial_width(dim, self.partial_dim, self.partial_ratio)

    def check(self, shape: Shape, out: int) -> None:
        partial = self.partial(shape[0])
        if self.partial_dim is not None and partial > shape[0]:
            raise ShapeError("partial_dim", f"{partial} exceeds width {shape[0]}")
        if partial < 1:
            raise ShapeError("partial_ratio", f"{self.partial_ratio} of width {shape[0]} leaves no channel")

    def params(self, shape: Shape, out: int) -> int:
        dim, partial = shape[0], self.partial(shape[0])
        projected = 2 * self.qk_dim + partial
        return 2 * partial + (partial + 2) * projected + (dim + 2) * dim

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens, partial = h * w, self.partial(dim)
        projected = 2 * self.qk_dim + partial
        norm = GroupNormConfig().flops((partial, h, w), partial)
        attention = tokens * tokens * (self.qk_dim + partial)
        return norm + tokens * ((partial + 2) * projected + (dim + 2) * dim) + attention

    def workspace(self, shape: Shape, out: int) -> int:
        """q, k, v, plus the score matrix an unfused kernel materialises."""
        tokens = shape[1] * shape[2]
        return tokens * (2 * self.qk_dim + self.partial(shape[0])) + tokens * tokens


class ConvBnFFN(nn.Module):
    """SHViT's FFN on NCHW maps: 1x1 conv-BN -> ReLU -> 1x1 conv-BN."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.expand = conv_bn(dim, hidden, act="relu")
        self.project = conv_bn(hidden, dim)

    def forward(self, x):
        return self.project(self.expand(x))


def conv_ffn_cost(dim: int, hidden: int, kernel: int, tokens: int) -> tuple[int, int]:
    """(params, FLOPs) of a depthwise conv-BN and a conv-BN FFN, the mixer-free part of an SHViT block."""
    params = (kernel**2 + 2) * dim + (dim + 2) * hidden + (hidden + 2) * dim
    return params, params * tokens


class SHViTBlock(BlockModule):
    """x + DWConv-BN(x), then x + mixer(x) when there is one (SHViT's later stages), then x + FFN(x). No norm
    around the mixer: each conv carries its BatchNorm, and single-head attention its own GroupNorm."""

    def __init__(self, dim, size, mixer=None, ffn_ratio=2.0, kernel=3, drop_path=0.0):
        super().__init__()
        self.dwconv = conv_bn(dim, dim, kernel, groups=dim)
        self.mixer = None
        if mixer:
            self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.ffn = ConvBnFFN(dim, scaled_width(dim, ffn_ratio, "floor"))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(nhwc(self.dwconv(nchw(x))))
        if self.mixer is not None:
            x = x + self.drop_path(self.mixer(x))
        return x + self.drop_path(nhwc(self.ffn(nchw(x))))


@register("block", module=SHViTBlock)
class SHViTBlockConfig(BlockConfig):
    """SHViT's block: ``mixer: null`` in the early stages (its "i" type), ``single_head_attention`` later ("s");
    any registered mixer fits."""

    type: Literal["shvit"] = "shvit"
    examples = (
        {'mixer': {'type': 'single_head_attention', 'qk_dim': 8}},
        {'mixer': {'type': 'attention', 'heads': 2}, 'ffn_ratio': 3.0, 'kernel': 5},
    )
    mixer: Mixer | None = Field(None, description="null: conv and FFN only")
    ffn_ratio: PositiveFloat = 2.0
    kernel: OddInt = Field(3, description="kernel of the depthwise conv")

    def _hidden(self, dim: int) -> int:
        return scaled_width(dim, self.ffn_ratio, "floor")

    def check(self, shape: Shape, out: int) -> None:
        if self._hidden(shape[0]) < 1:
            raise ShapeError("ffn_ratio", f"{self.ffn_ratio} of width {shape[0]} leaves no hidden channel")
        super().check(shape, out)

    def params(self, shape: Shape, out: int) -> int:
        params, _ = conv_ffn_cost(shape[0], self._hidden(shape[0]), self.kernel, count(*shape[1:]))
        return params + (self.mixer.params(shape, shape[0]) if self.mixer else 0)

    def flops(self, shape: Shape, out: int) -> int:
        _, flops = conv_ffn_cost(shape[0], self._hidden(shape[0]), self.kernel, count(*shape[1:]))
        return flops + (self.mixer.flops(shape, shape[0]) if self.mixer else 0)

    def workspace(self, shape: Shape, out: int) -> int:
        return max(super().workspace(shape, out), self._hidden(shape[0]) * shape[1] * shape[2])


class SHViTDownsample(BlockModule):
    """A mixer-free SHViT block at the input width, then the stride-2 inverted bottleneck (1x1 conv-BN to
    ``expansion`` x width -> ReLU -> 3x3 depthwise stride-2 conv-BN -> ReLU -> squeeze-excite -> 1x1 conv-BN to
    the output width), then a mixer-free SHViT block at the output width."""

    def __init__(self, in_chs, out_chs, size, expansion=4.0, se=0.25, ffn_ratio=2.0, act="relu"):
        super().__init__()
        hidden = scaled_width(in_chs, expansion, "floor")
        self.pre = SHViTBlock(in_chs, size, ffn_ratio=ffn_ratio)
        self.expand = conv_bn(in_chs, hidden, act=act)
        self.dwconv = conv_bn(hidden, hidden, 3, stride=2, groups=hidden, act=act)
        self.se = SqueezeExcite(hidden, scaled_width(hidden, se, "floor"), "relu") if se else nn.Identity()
        self.project = conv_bn(hidden, out_chs)
        self.post = SHViTBlock(out_chs, self.out_size(size), ffn_ratio=ffn_ratio)

    def out_size(self, size):
        return conv_out(size, 3, 2, 1)

    def forward(self, x):
        x = nchw(self.pre(x))
        x = self.project(self.se(self.dwconv(self.expand(x))))
        return self.post(nhwc(x))


@register("downsample", module=SHViTDownsample)
class SHViTDownsampleConfig(BlockConfig):
    type: Literal["shvit_downsample"] = "shvit_downsample"
    examples = (
        {},
        {'expansion': 2.0, 'se': None, 'act': 'gelu'},
    )
    expansion: PositiveFloat = Field(4.0, description="hidden width of the bottleneck, relative to the input")
    se: PositiveFloat | None = Field(0.25, description="squeeze-excitation width relative to the hidden width")
    ffn_ratio: PositiveFloat = Field(2.0, description="FFN ratio of the SHViT blocks before and after")
    act: Act = "relu"

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *conv_out(shape[1:], 3, 2, 1))

    def _hidden(self, shape: Shape) -> int:
        return scaled_width(shape[0], self.expansion, "floor")

    def _blocks(self) -> SHViTBlockConfig:
        return SHViTBlockConfig(ffn_ratio=self.ffn_ratio)

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < 2:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for a stride-2 downsample")
        if self.se and scaled_width(self._hidden(shape), self.se, "floor") < 1:
            raise ShapeError("se", f"{self.se} of width {self._hidden(shape)} leaves no squeeze-excitation channel")
        check_within("ffn_ratio", self._blocks(), shape)

    def params(self, shape: Shape, out: int) -> int:
        in_chs, hidden = shape[0], self._hidden(shape)
        n = (in_chs + 2) * hidden + 11 * hidden + (hidden + 2) * out
        if self.se:
            reduced = scaled_width(hidden, self.se, "floor")
            n += 2 * hidden * reduced + reduced + hidden
        out_shape = self.out_shape(shape, out)
        return n + self._blocks().params(shape, in_chs) + self._blocks().params(out_shape, out)

    def flops(self, shape: Shape, out: int) -> int:
        in_chs, hidden = shape[0], self._hidden(shape)
        out_shape = self.out_shape(shape, out)
        pixels, out_pixels = count(*shape[1:]), count(*out_shape[1:])
        n = (in_chs + 2) * hidden * pixels + (11 * hidden + (hidden + 2) * out) * out_pixels
        if self.se:
            n += 2 * hidden * scaled_width(hidden, self.se, "floor")
        return n + self._blocks().flops(shape, in_chs) + self._blocks().flops(out_shape, out)

    def workspace(self, shape: Shape, out: int) -> int:
        return self._hidden(shape) * count(*shape[1:])


class PatchifyConvs(BlockModule):
    """``convs`` stride-2 kxk conv-BN layers with an act between them, widths doubling up to the output:
    SHViT's 16x16 patchify stem (four 3x3 convs, ReLU)."""

    def __init__(self, in_chs, out_chs, convs=4, kernel=3, act="relu"):
        super().__init__()
        widths = [in_chs] + [out_chs >> (convs - 1 - i) for i in range(convs)]
        layers = []
        for i in range(convs):
            layers.append(conv_bn(widths[i], widths[i + 1], kernel, stride=2))
            if i < convs - 1:
                layers.append(create_act(act))
        self.convs = nn.Sequential(*layers)

    def out_size(self, size):
        for layer in self.convs:
            if isinstance(layer, nn.Sequential):
                conv = layer[0]
                size = conv_out(size, conv.kernel_size[0], 2, conv.padding[0])
        return size

    def forward(self, x):
        return nhwc(self.convs(nchw(x)))


@register("stem", module=PatchifyConvs)
class PatchifyConvsConfig(BlockConfig):
    type: Literal["patchify_convs"] = "patchify_convs"
    examples = (
        {},
        {'convs': 2, 'kernel': 5, 'act': 'gelu'},
    )
    convs: PositiveInt = Field(4, le=8, description="stride-2 conv-BN layers; the stem's stride is 2**convs")
    kernel: OddInt = 3
    act: Act = "relu"

    def _shapes(self, shape: Shape, out: int) -> list[Shape]:
        """Each conv's output shape."""
        shapes, size = [], shape[1:]
        for i in range(self.convs):
            size = conv_out(size, self.kernel, 2, self.kernel // 2)
            shapes.append((out >> (self.convs - 1 - i), *size))
        return shapes

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return self._shapes(shape, out)[-1]

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < 2**self.convs:
            raise ShapeError("convs", f"{self.convs} stride-2 convs need a map of at least {2**self.convs} pixels "
                                      f"a side, not {shape[1]}x{shape[2]}")
        if out >> (self.convs - 1) < 1:
            raise ShapeError("convs", f"width {out} cannot be halved {self.convs - 1} times")

    def params(self, shape: Shape, out: int) -> int:
        widths = [shape[0]] + [s[0] for s in self._shapes(shape, out)]
        return sum((self.kernel**2 * a + 2) * b for a, b in zip(widths, widths[1:]))

    def flops(self, shape: Shape, out: int) -> int:
        shapes = self._shapes(shape, out)
        widths = [shape[0]] + [s[0] for s in shapes]
        return sum((self.kernel**2 * a + 2) * count(*s) for a, s in zip(widths, shapes))
