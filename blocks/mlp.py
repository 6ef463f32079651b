"""Channel mixers (MLPs) and MLP-like token mixers."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from blocks.activations import Act, act_params, create_act
from blocks.base import BlockConfig, BlockModule, Shape, count, register
from blocks.layers import nchw, nhwc, scaled_width
from blocks.validators import OddInt


class Mlp(BlockModule):
    """Linear -> act -> Linear on channels-last maps."""

    def __init__(self, dim, ratio=4.0, act="gelu", bias=True):
        super().__init__()
        hidden = scaled_width(dim, ratio)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@register("mlp", module=Mlp)
class MlpConfig(BlockConfig):
    type: Literal["mlp"] = "mlp"
    examples = (
        {},
        {'ratio': 2.5, 'act': 'star_relu', 'bias': False},
    )
    ratio: PositiveFloat = 4.0
    act: Act = "gelu"
    bias: bool = True

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        hidden = scaled_width(dim, self.ratio)
        return 2 * dim * hidden + (hidden + dim) * self.bias + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return 2 * h * w * dim * scaled_width(dim, self.ratio)

    def takes_class_token(self) -> bool:
        return True  # token-wise

    def workspace(self, shape: Shape, out: int) -> int:
        return shape[1] * shape[2] * scaled_width(shape[0], self.ratio)


def depthwise_conv(channels, kernel, bias=True):
    return nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=bias)


class ConvFfn(BlockModule):
    """fc1 -> depthwise conv -> act -> fc2: the MLP with a 3x3 depthwise conv between its layers that gives
    PVT v2 and VAN their positional information. ``conv_residual`` is SMT's form, act(x + dwconv(x))."""

    def __init__(self, dim, ratio=4.0, kernel=3, act="gelu", bias=True, conv_residual=False):
        super().__init__()
        hidden = scaled_width(dim, ratio)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.dwconv = depthwise_conv(hidden, kernel)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.conv_residual = conv_residual

    def forward(self, x):
        x = self.fc1(x)
        y = nhwc(self.dwconv(nchw(x)))
        return self.fc2(self.act(x + y if self.conv_residual else y))


@register("mlp", module=ConvFfn)
class ConvFfnConfig(BlockConfig):
    type: Literal["convffn"] = "convffn"
    examples = (
        {},
        {'ratio': 2.0, 'kernel': 5, 'act': 'relu', 'bias': False},
        {'conv_residual': True},
    )
    ratio: PositiveFloat = 4.0
    kernel: OddInt = 3
    act: Act = "gelu"
    bias: bool = Field(True, description="biases of fc1 and fc2; the depthwise conv always has one")
    conv_residual: bool = Field(False, description="act(x + dwconv(x)) as in SMT")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        hidden = scaled_width(dim, self.ratio)
        fc = 2 * dim * hidden + (hidden + dim) * self.bias
        return fc + hidden * (self.kernel**2 + 1) + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        hidden = scaled_width(dim, self.ratio)
        return h * w * hidden * (2 * dim + self.kernel**2)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * shape[1] * shape[2] * scaled_width(shape[0], self.ratio)


class Glu(BlockModule):
    """fc1 to a gate and a value of ``hidden`` channels each, act(gate) * value, fc2 (Shazeer's GLU
    variants; SiLU gives SwiGLU). ratio 8/3 keeps the parameters of a ratio-4 MLP."""

    def __init__(self, dim, ratio=4.0, act="silu", bias=True):
        super().__init__()
        hidden = scaled_width(dim, ratio)
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.act(gate) * value)


class _GatedConfig(BlockConfig):
    """fc1 to 2 * hidden, fc2 from hidden: the linear layers of the gated channel mixers."""

    ratio: PositiveFloat = 4.0
    bias: bool = True

    def _hidden(self, shape: Shape) -> int:
        return scaled_width(shape[0], self.ratio)

    def params(self, shape: Shape, out: int) -> int:
        dim, hidden = shape[0], self._hidden(shape)
        return 3 * dim * hidden + (2 * hidden + dim) * self.bias + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        return 3 * shape[1] * shape[2] * shape[0] * self._hidden(shape)

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * shape[1] * shape[2] * self._hidden(shape)


@register("mlp", module=Glu)
class GluConfig(_GatedConfig):
    type: Literal["glu"] = "glu"
    examples = (
        {},
        {'ratio': 2.5, 'act': 'gelu', 'bias': False},
        {'act': 'sigmoid'},
    )
    act: Act = "silu"


class ConvGlu(BlockModule):
    """TransNeXt's convolutional GLU: fc1 to x and v, act(dwconv3x3(x)) * v, fc2. The gate sees its 3x3
    neighbourhood. TransNeXt sizes hidden as int(2/3 * mlp_ratio * dim); give that as ``ratio * dim``."""

    def __init__(self, dim, ratio=4.0, kernel=3, act="gelu", bias=True):
        super().__init__()
        hidden = scaled_width(dim, ratio)
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.dwconv = depthwise_conv(hidden, kernel)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        x, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.act(nhwc(self.dwconv(nchw(x)))) * value)


@register("mlp", module=ConvGlu)
class ConvGluConfig(_GatedConfig):
    type: Literal["convglu"] = "convglu"
    examples = (
        {},
        {'ratio': 2.0, 'kernel': 5, 'act': 'silu', 'bias': False},
    )
    kernel: OddInt = 3
    act: Act = "gelu"

    def params(self, shape: Shape, out: int) -> int:
        return super().params(shape, out) + self._hidden(shape) * (self.kernel**2 + 1)

    def flops(self, shape: Shape, out: int) -> int:
        return super().flops(shape, out) + count(self._hidden(shape), *shape[1:]) * self.kernel**2


class RandomMixing(BlockModule):
    """Tokens mixed by a frozen random row-stochastic matrix (RandFormer)."""

    def __init__(self, size):
        super().__init__()
        tokens = size[0] * size[1]
        self.matrix = nn.Parameter(torch.softmax(torch.rand(tokens, tokens), dim=-1), requires_grad=False)

    def forward(self, x):
        b, h, w, c = x.shape
        y = x.reshape(b, h * w, c).transpose(1, 2) @ self.matrix.t()
        return y.transpose(1, 2).reshape(b, h, w, c)


@register("mixer", module=RandomMixing)
class RandomMixingConfig(BlockConfig):
    type: Literal["random"] = "random"

    def params(self, shape: Shape, out: int) -> int:
        return self.frozen_params(shape, out)

    def frozen_params(self, shape: Shape, out: int) -> int:
        return (shape[1] * shape[2]) ** 2

    def flops(self, shape: Shape, out: int) -> int:
        return count(*shape) * shape[1] * shape[2]
