"""Mobile inverted residuals: the MobileNetV2 block and MaxViT's MBConv as one ``mbconv`` type. (The
MobileNetV2 classifier head is in blocks/heads.py.)"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, conv_out, count, register
from blocks.layers import DropPath, SqueezeExcite, conv_bn, nchw, nhwc, scaled_width
from blocks.validators import OddInt, Padding


class PoolConvShortcut(nn.Module):
    """MaxViT's resampling shortcut: average pooling by the stride, then a 1x1 conv if the width changes."""

    def __init__(self, in_chs, out_chs, stride):
        super().__init__()
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.proj = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()

    def forward(self, x):
        return self.proj(self.pool(x))


class MBConv(BlockModule):
    """[BN] -> 1x1 expand -> BN -> act -> kxk depthwise (strided) -> BN -> act -> [SE] -> 1x1 project [-> BN],
    with a residual when the map keeps its shape, or a pooled shortcut (MaxViT) when it does not. Every
    BatchNorm takes ``norm_eps``; the depthwise conv pads as ``padding`` says."""

    def __init__(self, in_chs, out_chs, expansion=6.0, kernel=3, stride=1, act="relu6", expand_from="in",
                 pre_norm=False, out_norm=True, se=None, se_act="silu", shortcut="none", padding="symmetric",
                 norm_eps=1e-5, drop_path=0.0):
        super().__init__()
        mid = mbconv_mid(in_chs, out_chs, expansion, expand_from)
        self.stride = stride
        self.pre_norm = nn.BatchNorm2d(in_chs, eps=norm_eps) if pre_norm else nn.Identity()
        self.expand = conv_bn(in_chs, mid, act=act, eps=norm_eps) if expansion != 1 else nn.Identity()
        self.dwconv = conv_bn(mid, mid, kernel, stride=stride, groups=mid, act=act, eps=norm_eps, padding=padding)
        self.se = SqueezeExcite(mid, scaled_width(out_chs, se, "floor"), se_act) if se else nn.Identity()
        if out_norm:
            self.project = conv_bn(mid, out_chs, eps=norm_eps)
        else:
            self.project = nn.Conv2d(mid, out_chs, 1)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        elif shortcut == "pool_conv":
            self.shortcut = PoolConvShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = None
        self.drop_path = DropPath(drop_path)

    def out_size(self, size):
        kernel = self.dwconv[0].kernel_size[0]
        return conv_out(size, kernel, self.stride, kernel // 2)  # an odd kernel: "same" pads to this size too

    def forward(self, x):
        x = nchw(x)
        y = self.project(self.se(self.dwconv(self.expand(self.pre_norm(x)))))
        if self.shortcut is not None:
            y = self.shortcut(x) + self.drop_path(y)
        return nhwc(y)


def mbconv_mid(in_chs, out_chs, expansion, expand_from):
    """Expanded width: MobileNetV2 expands the input width, MaxViT the output width."""
    return scaled_width(in_chs if expand_from == "in" else out_chs, expansion)


@register("block", module=MBConv)
class MBConvConfig(BlockConfig):
    """MobileNetV2 (defaults) or, with ``act: gelu, expand_from: out, pre_norm: true, out_norm: false, se: 0.25,
    shortcut: pool_conv, expansion: 4``, MaxViT's MBConv; its TensorFlow release adds ``act: gelu_tanh,
    padding: same, norm_eps: 1.0e-3``. The pooled shortcut needs no padding either way: its stride divides the
    map, where TensorFlow's "same" pads nothing."""

    type: Literal["mbconv"] = "mbconv"
    examples = (
        {'expansion': 1, 'stride': 2},
        {'expansion': 4, 'act': 'gelu', 'expand_from': 'out', 'pre_norm': True, 'out_norm': False, 'se': 0.25,
         'shortcut': 'pool_conv', 'stride': 2},
        {'expansion': 4, 'act': 'gelu_tanh', 'expand_from': 'out', 'pre_norm': True, 'out_norm': False, 'se': 0.25,
         'shortcut': 'pool_conv', 'stride': 2, 'padding': 'same', 'norm_eps': 1e-3},
        {'expansion': 1, 'stride': 2, 'padding': 'same'},
        {'kernel': 5, 'se': 0.25, 'se_act': 'relu'},
    )
    expansion: PositiveFloat = 6.0
    kernel: OddInt = 3
    stride: PositiveInt = 1
    act: Act = "relu6"
    expand_from: Literal["in", "out"] = Field("in", description="width the expansion multiplies")
    pre_norm: bool = Field(False, description="BatchNorm on the block input (MaxViT)")
    out_norm: bool = Field(True, description="BatchNorm after the projection; false: a biased projection (MaxViT)")
    se: PositiveFloat | None = Field(None, description="squeeze-excitation width as a fraction of the output width")
    se_act: Act = "silu"
    shortcut: Literal["none", "pool_conv"] = Field(
        "none", description="when stride or width change: no residual (MobileNetV2), or avgpool + 1x1 conv (MaxViT)")
    padding: Padding = Field("symmetric", description="the depthwise conv's: kernel // 2 each side, or TensorFlow's "
                                                      "'same' (only after, on an even map at stride 2)")
    norm_eps: PositiveFloat = Field(1e-5, description="eps of every BatchNorm in the block (TensorFlow's: 1e-3)")

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, *conv_out(shape[1:], self.kernel, self.stride, self.kernel // 2))

    def check(self, shape: Shape, out: int) -> None:
        if min(shape[1:]) < self.stride:
            raise ShapeError("stride", f"{self.stride} is larger than the {shape[1]}x{shape[2]} feature map")
        pooled = self.shortcut == "pool_conv" and self.stride > 1
        if pooled and (shape[1] % self.stride or shape[2] % self.stride):
            raise ShapeError("stride", f"{self.stride} does not divide the {shape[1]}x{shape[2]} feature map, "
                                       "which the pooled shortcut needs")
        if self.se and scaled_width(out, self.se, "floor") < 1:
            raise ShapeError("se", f"{self.se} of width {out} leaves no squeeze-excitation channel")
        if self.expansion == 1 and shape[0] != self._mid(shape, out):
            raise ShapeError("expansion", "expansion 1 (no expand conv) needs expand_from: in")

    def _mid(self, shape: Shape, out: int) -> int:
        return mbconv_mid(shape[0], out, self.expansion, self.expand_from)

    def params(self, shape: Shape, out: int) -> int:
        in_chs, mid = shape[0], self._mid(shape, out)
        n = 2 * in_chs * self.pre_norm
        n += (in_chs * mid + 2 * mid) if self.expansion != 1 else 0
        n += mid * self.kernel**2 + 2 * mid
        if self.se:
            reduced = scaled_width(out, self.se, "floor")
            n += 2 * mid * reduced + reduced + mid
        n += mid * out + (2 * out if self.out_norm else out)
        if self.shortcut == "pool_conv" and in_chs != out:
            n += in_chs * out + out
        return n

    def flops(self, shape: Shape, out: int) -> int:
        in_chs, h, w = shape
        mid = self._mid(shape, out)
        _, h2, w2 = self.out_shape(shape, out)
        n = 2 * count(*shape) * self.pre_norm
        n += (in_chs * mid * h * w + 2 * mid * h * w) if self.expansion != 1 else 0
        n += mid * self.kernel**2 * h2 * w2 + 2 * mid * h2 * w2
        if self.se:
            n += 2 * mid * scaled_width(out, self.se, "floor")
        n += mid * out * h2 * w2 + (2 * out * h2 * w2 if self.out_norm else 0)
        if self.shortcut == "pool_conv" and in_chs != out:
            n += in_chs * out * h2 * w2
        return n

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * self._mid(shape, out) * shape[1] * shape[2]


