"""MLP token mixers: MLP-Mixer's MLP across the tokens, and S2-MLP's spatial shift between channel projections."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, act_params, create_act
from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, register
from blocks.layers import scaled_width


def token_hidden_width(tokens, ratio, hidden=None):
    """The token MLP's hidden width: ``hidden`` when given, else ``ratio`` times the token count."""
    return hidden if hidden is not None else scaled_width(tokens, ratio)


class TokenMlp(BlockModule):
    """MLP-Mixer's token-mixing MLP: Linear -> act -> Linear across the H*W tokens, shared by all channels.

    Its weights are sized for the H*W tokens of the map it is built for, so the network is tied to its input
    resolution (like a learned position embedding)."""

    def __init__(self, dim, size, ratio=2.0, tokens_hidden=None, act="gelu", bias=True):
        super().__init__()
        tokens = size[0] * size[1]
        width = token_hidden_width(tokens, ratio, tokens_hidden)
        self.fc1 = nn.Linear(tokens, width, bias=bias)
        self.act = create_act(act)
        self.fc2 = nn.Linear(width, tokens, bias=bias)

    def forward(self, x):
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c).transpose(1, 2)  # (B, C, N): one row of tokens per channel
        tokens = self.fc2(self.act(self.fc1(tokens)))
        return tokens.transpose(1, 2).reshape(b, h, w, c)


@register("mixer", module=TokenMlp)
class TokenMlpConfig(BlockConfig):
    type: Literal["token_mlp"] = "token_mlp"
    examples = (
        {},
        {'tokens_hidden': 24, 'act': 'relu', 'bias': False},
        {'ratio': 0.5},
    )
    ratio: PositiveFloat = Field(2.0, description="hidden width as a multiple of the token count H*W")
    tokens_hidden: PositiveInt | None = Field(None, description="hidden width; overrides ratio (Mixer-B/16: 384)")
    act: Act = "gelu"
    bias: bool = True

    def _hidden(self, shape: Shape) -> int:
        return token_hidden_width(shape[1] * shape[2], self.ratio, self.tokens_hidden)

    def check(self, shape: Shape, out: int) -> None:
        """The weights are (H*W, hidden) matrices built for this map's size: a genome with a token MLP runs
        only at the input resolution it was built for. Any map size is fine as long as the hidden width is."""
        if self._hidden(shape) < 1:
            raise ShapeError("ratio", f"{self.ratio} times the {shape[1]}x{shape[2]} tokens leaves no hidden "
                                      "units; the token MLP is sized by the input resolution")

    def params(self, shape: Shape, out: int) -> int:
        tokens, hidden = shape[1] * shape[2], self._hidden(shape)
        return 2 * tokens * hidden + (hidden + tokens) * self.bias + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape) * self._hidden(shape)

    def workspace(self, shape: Shape, out: int) -> int:
        return count(*shape) + shape[0] * self._hidden(shape)  # the transposed copy, then the hidden map


def spatial_shift(x):
    """S2-MLP's shift on (B, H, W, C): four channel quarters move one step down, up, right and left; the
    row or column left empty at the border keeps its own values."""
    c = x.shape[-1]
    down, up, right, left = x[..., : c // 4], x[..., c // 4: c // 2], x[..., c // 2: 3 * c // 4], x[..., 3 * c // 4:]
    return torch.cat([
        torch.cat([down[:, :1], down[:, :-1]], dim=1),
        torch.cat([up[:, 1:], up[:, -1:]], dim=1),
        torch.cat([right[:, :, :1], right[:, :, :-1]], dim=2),
        torch.cat([left[:, :, 1:], left[:, :, -1:]], dim=2),
    ], dim=-1)


class ShiftMlp(BlockModule):
    """S2-MLP's spatial-shift token mixer (Yu et al., S2-MLP, WACV 2022): Linear -> act -> spatial shift ->
    Linear. Tokens only meet their four neighbours through the shift; the projections mix channels. No
    weight depends on the map size."""

    def __init__(self, dim, act="gelu", bias=True):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim, bias=bias)
        self.act = create_act(act)
        self.fc2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x):
        return self.fc2(spatial_shift(self.act(self.fc1(x))))


@register("mixer", module=ShiftMlp)
class ShiftMlpConfig(BlockConfig):
    type: Literal["shift_mlp"] = "shift_mlp"
    examples = (
        {},
        {'act': 'relu', 'bias': False},
    )
    act: Act = "gelu"
    bias: bool = True

    def check(self, shape: Shape, out: int) -> None:
        if shape[0] < 4:
            raise ShapeError(None, f"the spatial shift moves four channel groups; {shape[0]} channels is too few")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        return 2 * dim * (dim + self.bias) + act_params(self.act)

    def flops(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape) * shape[0]

    def workspace(self, shape: Shape, out: int) -> int:
        return 2 * count(*shape)
