"""Channel mixers (MLPs) and MLP-like token mixers."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveFloat
from torch import nn

from blocks.base import BlockConfig, Shape, count, register
from blocks.layers import Act, act_params, create_act


def hidden_width(dim, ratio):
    return int(round(dim * ratio))


class Mlp(nn.Module):
    """Linear -> act -> Linear on channels-last maps."""

    def __init__(self, dim, ratio=4.0, act="gelu", bias=True):
        super().__init__()
        hidden = hidden_width(dim, ratio)
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
        hidden = hidden_width(dim, self.ratio)
        return 2 * dim * hidden + (hidden + dim) * self.bias + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return 2 * h * w * dim * hidden_width(dim, self.ratio)

    def workspace(self, shape: Shape, out: int) -> int:
        return shape[1] * shape[2] * hidden_width(shape[0], self.ratio)


class RandomMixing(nn.Module):
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
