"""Stems and downsamples: the layers between blocks that change the map's size and width. A stem turns the
image into the first stage's map; a downsample starts a later stage.

- ``conv``: a strided conv with optional norms and act, the patchify stem and the usual downsample.
- ``patch_merging``: Swin's 2x2 merge to 4C channels, norm, linear.
- ``conv_pair``: two convs (MaxViT, NAT); ``two_conv``: two stride-2 convs (MambaOut, UniRepLKNet).
- ``resnet``: ResNet's 7x7 conv and max-pool.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from torch import nn

from blocks.activations import Act, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, check_within, conv_out, count, create, register
from blocks.layers import conv_bn, nchw, nhwc, padded_conv, same_size, scaled_width
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt, Padding

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Norm


class ConvDownsample(BlockModule):
    """norm -> strided conv -> norm -> act, each but the conv optional; serves as stem and as stage
    downsampling. ``padding`` is a count of zeros on every side, or ``same`` (TensorFlow's rule)."""

    def __init__(self, in_chs, out_chs, size, kernel, stride, padding, bias=True, pre_norm=None,
                 post_norm=None, act="identity", pos_embed=False):
        super().__init__()
        self.pre_norm = create("norm", pre_norm, dim=in_chs) if pre_norm else nn.Identity()
        if padding == "same":
            self.conv = padded_conv(in_chs, out_chs, kernel, stride=stride, bias=bias, padding="same")
        else:
            self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding, bias=bias)
        self.same = padding == "same"
        self.post_norm = create("norm", post_norm, dim=out_chs) if post_norm else nn.Identity()
        self.act = create_act(act)
        out_h, out_w = self.out_size(size)
        self.pos_embed = nn.Parameter(torch.zeros(out_h, out_w, out_chs)) if pos_embed else None
        if pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def out_size(self, size):
        if self.same:
            return same_size(size, self.conv.stride[0])
        return conv_out(size, self.conv.kernel_size[0], self.conv.stride[0], self.conv.padding[0])

    def forward(self, x):
        x = self.act(self.post_norm(nhwc(self.conv(nchw(self.pre_norm(x))))))
        return x if self.pos_embed is None else x + self.pos_embed


@register("stem", "downsample", module=ConvDownsample)
class ConvDownsampleConfig(BlockConfig):
    type: Literal["conv"] = "conv"
    examples = (
        {'kernel': 4, 'stride': 4},
        {'kernel': 7, 'stride': 4, 'padding': 2, 'post_norm': 'layernorm', 'pos_embed': True},
        {'kernel': 3, 'stride': 2, 'pre_norm': {'type': 'layernorm', 'bias': False}},
        {'kernel': 2, 'stride': 2, 'post_norm': 'batchnorm', 'bias': False},
        {'kernel': 3, 'stride': 2, 'padding': 'same', 'post_norm': {'type': 'batchnorm', 'eps': 1e-3}},
        {'kernel': 4, 'stride': 1, 'padding': 'same'},
    )
    kernel: PositiveInt
    stride: PositiveInt
    padding: NonNegativeInt | Literal["same"] = Field(  # type: ignore[assignment]
        None, description="zeros on every side (default: (kernel - stride + 1) // 2), or 'same': TensorFlow's rule, "
                          "ceil(size / stride) outputs, the odd pad after (right, bottom)")
    bias: bool = True
    pre_norm: Norm | None = None
    post_norm: Norm | None = None
    act: Act = "identity"
    pos_embed: bool = Field(False, description="learned absolute position embedding added after the conv")

    @model_validator(mode="before")
    @classmethod
    def _default_padding(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("padding") is None:
            kernel, stride = data.get("kernel"), data.get("stride")
            if isinstance(kernel, int) and isinstance(stride, int):
                data = {**data, "padding": max(kernel - stride + 1, 0) // 2}
        return data

    def out_shape(self, shape: Shape, out: int) -> Shape:
        if self.padding == "same":
            return (out, *same_size(shape[1:], self.stride))
        h, w = conv_out(shape[1:], self.kernel, self.stride, self.padding)
        return (out, h, w)

    def check(self, shape: Shape, out: int) -> None:
        _, h, w = self.out_shape(shape, out)
        if h < 1 or w < 1 or min(shape[1:]) < self.stride:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for kernel {self.kernel}, "
                                   f"stride {self.stride}, padding {self.padding}")
        if self.pre_norm:
            check_within("pre_norm", self.pre_norm, shape)
        if self.post_norm:
            check_within("post_norm", self.post_norm, (out, h, w))

    def params(self, shape: Shape, out: int) -> int:
        c_out, h, w = self.out_shape(shape, out)
        n = self.kernel**2 * shape[0] * out + out * self.bias
        n += self.pre_norm.params(shape, shape[0]) if self.pre_norm else 0
        n += self.post_norm.params((out, h, w), out) if self.post_norm else 0
        return n + (count(c_out, h, w) if self.pos_embed else 0)

    def flops(self, shape: Shape, out: int) -> int:
        _, h, w = self.out_shape(shape, out)
        n = self.kernel**2 * shape[0] * out * h * w
        n += self.pre_norm.flops(shape, shape[0]) if self.pre_norm else 0
        return n + (self.post_norm.flops((out, h, w), out) if self.post_norm else 0)


class PatchMerging(BlockModule):
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


class ConvPairStem(BlockModule):
    """conv (stride s1) -> [norm -> act] -> conv (stride s2) -> [norm], both convs kernel x kernel, the first
    to ``mid_ratio * out_chs`` channels. MaxViT: 3x3 s2, BatchNorm, GELU, 3x3 s1 (its TensorFlow release: BatchNorm
    eps 1e-3, tanh GELU, "same" padding). NAT: 3x3 s2, 3x3 s2, LayerNorm."""

    def __init__(self, in_chs, out_chs, kernel=3, strides=(2, 2), mid_ratio=0.5, bias=True, mid_norm=None,
                 act="identity", post_norm=None, padding="symmetric"):
        super().__init__()
        mid = scaled_width(out_chs, mid_ratio)
        self.conv1 = padded_conv(in_chs, mid, kernel, stride=strides[0], bias=bias, padding=padding)
        self.mid_norm = create("norm", mid_norm, dim=mid) if mid_norm else nn.Identity()
        self.act = create_act(act)
        self.conv2 = padded_conv(mid, out_chs, kernel, stride=strides[1], bias=bias, padding=padding)
        self.post_norm = create("norm", post_norm, dim=out_chs) if post_norm else nn.Identity()

    def out_size(self, size):
        for conv in (self.conv1, self.conv2):  # odd kernels: "same" pads to these sizes too
            size = conv_out(size, conv.kernel_size[0], conv.stride[0], conv.kernel_size[0] // 2)
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
        {'strides': [2, 1], 'mid_ratio': 1.0, 'mid_norm': {'type': 'batchnorm', 'eps': 1e-3}, 'act': 'gelu_tanh',
         'padding': 'same'},
        {'strides': [2, 2], 'act': 'relu', 'padding': 'same'},
    )
    kernel: OddInt = 3
    strides: tuple[PositiveInt, PositiveInt] = (2, 2)
    mid_ratio: PositiveFloat = Field(0.5, description="channels after the first conv, relative to the output")
    bias: bool = True
    mid_norm: Norm | None = None
    act: Act = "identity"
    post_norm: Norm | None = None
    padding: Padding = Field("symmetric", description="both convs': kernel // 2 each side, or TensorFlow's 'same' "
                                                      "(only after, on an even map at stride 2)")

    def _shapes(self, shape: Shape, out: int) -> tuple[Shape, Shape]:
        mid = (scaled_width(out, self.mid_ratio), *conv_out(shape[1:], self.kernel, self.strides[0], self.kernel // 2))
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


class TwoConvStem(BlockModule):
    """conv (to half width) -> norm -> act -> conv -> norm, both 3x3 stride 2: a gentler 4x patchify
    (MambaOut, UniRepLKNet)."""

    def __init__(self, in_chs, out_chs, kernel=3, stride=2, mid_ratio=0.5, norm=None, act="gelu"):
        super().__init__()
        mid = scaled_width(out_chs, mid_ratio, "floor")
        self.conv1 = nn.Conv2d(in_chs, mid, kernel, stride=stride, padding=kernel // 2)
        self.norm1 = create("norm", norm, dim=mid)
        self.act = create_act(act)
        self.conv2 = nn.Conv2d(mid, out_chs, kernel, stride=stride, padding=kernel // 2)
        self.norm2 = create("norm", norm, dim=out_chs)

    def out_size(self, size):
        conv = self.conv1
        for _ in range(2):
            size = conv_out(size, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        return size

    def forward(self, x):
        x = self.act(self.norm1(nhwc(self.conv1(nchw(x)))))
        return self.norm2(nhwc(self.conv2(nchw(x))))


@register("stem", module=TwoConvStem)
class TwoConvStemConfig(BlockConfig):
    type: Literal["two_conv"] = "two_conv"
    examples = (
        {},
        {'kernel': 5, 'mid_ratio': 1.0, 'norm': 'batchnorm', 'act': 'relu'},
    )
    kernel: OddInt = 3
    stride: PositiveInt = 2
    mid_ratio: PositiveFloat = Field(0.5, description="width after the first conv, as a fraction of the output")
    norm: Norm = Field(default_factory=LayerNormConfig)
    act: Act = "gelu"

    def _sizes(self, shape: Shape) -> list[tuple[int, int]]:
        first = conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2)
        return [first, conv_out(first, self.kernel, self.stride, self.kernel // 2)]

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *self._sizes(shape)[1])

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride**2:
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for two stride-"
                                   f"{self.stride} convs")
        if scaled_width(out, self.mid_ratio, "floor") < 1:
            raise ShapeError("mid_ratio", f"{self.mid_ratio} of width {out} leaves no channel")
        check_within("norm", self.norm, (out, *self._sizes(shape)[1]))

    def params(self, shape: Shape, out: int) -> int:
        mid, (first, last) = scaled_width(out, self.mid_ratio, "floor"), self._sizes(shape)
        convs = (shape[0] * mid + mid * out) * self.kernel**2 + mid + out
        return convs + self.norm.params((mid, *first), mid) + self.norm.params((out, *last), out)

    def flops(self, shape: Shape, out: int) -> int:
        mid, (first, last) = scaled_width(out, self.mid_ratio, "floor"), self._sizes(shape)
        n = shape[0] * mid * self.kernel**2 * count(*first) + mid * out * self.kernel**2 * count(*last)
        return n + self.norm.flops((mid, *first), mid) + self.norm.flops((out, *last), out)


class ResNetStem(BlockModule):
    """kxk strided conv -> BN -> act, then an optional 3x3 stride-2 max-pool. ``width`` sets its output
    channels when they differ from the first stage's (ResNet: 64 into a 256-wide stage)."""

    def __init__(self, in_chs, out_chs, kernel=7, stride=2, act="relu", pool=True, width=None):
        super().__init__()
        self.out_chs = width or out_chs
        self.conv = conv_bn(in_chs, self.out_chs, kernel, stride=stride, act=act)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1) if pool else nn.Identity()

    def out_size(self, size):
        conv = self.conv[0]
        size = conv_out(size, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        return conv_out(size, 3, 2, 1) if isinstance(self.pool, nn.MaxPool2d) else size

    def forward(self, x):
        return nhwc(self.pool(self.conv(nchw(x))))


@register("stem", module=ResNetStem)
class ResNetStemConfig(BlockConfig):
    type: Literal["resnet"] = "resnet"
    examples = (
        {'width': 8},
        {'kernel': 3, 'act': 'relu6', 'pool': False},
    )
    kernel: OddInt = 7
    stride: PositiveInt = 2
    act: Act = "relu"
    pool: bool = Field(True, description="3x3 stride-2 max-pool after the conv")
    width: PositiveInt | None = Field(None, description="output channels; default: the first stage's width")

    def _sizes(self, shape: Shape) -> tuple[tuple[int, int], tuple[int, int]]:
        conv = conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2)
        return conv, conv_out(conv, 3, 2, 1) if self.pool else conv

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (self.width or out, *self._sizes(shape)[1])

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride * (2 if self.pool else 1):
            raise ShapeError(None, f"a {shape[1]}x{shape[2]} feature map is too small for this stem")

    def params(self, shape: Shape, out: int) -> int:
        width = self.width or out
        return (shape[0] * self.kernel**2 + 2) * width

    def flops(self, shape: Shape, out: int) -> int:
        width = self.width or out
        h, w = self._sizes(shape)[0]
        return (shape[0] * self.kernel**2 + 2) * width * h * w
