"""InceptionNeXt: the Inception depthwise conv token mixer, and the MetaNeXt block it sits in
(token mixer -> norm -> MLP -> layer scale, one residual)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, count, create, register
from blocks.layers import DropPath, nchw, nhwc, optional_scale, scaled_width
from blocks.mlp import MlpConfig
from blocks.norm import BatchNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import ChannelMixer, Mixer, Norm


def inception_split(dim, branch_ratio):
    """Channels per conv branch, and the identity remainder."""
    branch = scaled_width(dim, branch_ratio, "floor")
    return branch, dim - 3 * branch


class InceptionDWConv(BlockModule):
    """Channels split into an identity part and three depthwise branches: square kxk, band 1xK and Kx1."""

    def __init__(self, dim, square_kernel=3, band_kernel=11, branch_ratio=0.125):
        super().__init__()
        branch, identity = inception_split(dim, branch_ratio)
        self.splits = (identity, branch, branch, branch)
        self.square = nn.Conv2d(branch, branch, square_kernel, padding=square_kernel // 2, groups=branch)
        self.band_w = nn.Conv2d(branch, branch, (1, band_kernel), padding=(0, band_kernel // 2), groups=branch)
        self.band_h = nn.Conv2d(branch, branch, (band_kernel, 1), padding=(band_kernel // 2, 0), groups=branch)

    def forward(self, x):
        x_id, x_sq, x_w, x_h = torch.split(nchw(x), self.splits, dim=1)
        return nhwc(torch.cat((x_id, self.square(x_sq), self.band_w(x_w), self.band_h(x_h)), dim=1))


@register("mixer", module=InceptionDWConv)
class InceptionDWConvConfig(BlockConfig):
    type: Literal["inception"] = "inception"
    examples = (
        {},
        {'square_kernel': 5, 'band_kernel': 7, 'branch_ratio': 0.25},
    )
    square_kernel: OddInt = 3
    band_kernel: OddInt = 11
    branch_ratio: PositiveFloat = Field(0.125, le=1 / 3, description="channels in each conv branch, as a fraction")

    def check(self, shape: Shape, out: int) -> None:
        if inception_split(shape[0], self.branch_ratio)[0] < 1:
            raise ShapeError("branch_ratio", f"{self.branch_ratio} of width {shape[0]} leaves no channel per branch")

    def params(self, shape: Shape, out: int) -> int:
        branch, _ = inception_split(shape[0], self.branch_ratio)
        return branch * (self.square_kernel**2 + 2 * self.band_kernel + 3)

    def flops(self, shape: Shape, out: int) -> int:
        branch, _ = inception_split(shape[0], self.branch_ratio)
        return branch * count(*shape[1:]) * (self.square_kernel**2 + 2 * self.band_kernel)


class MetaNeXtBlock(BlockModule):
    """mixer -> norm -> MLP -> layer scale, with one residual (InceptionNeXt; ConvNeXt with any mixer)."""

    def __init__(self, dim, size, mixer, mlp=None, norm=None, layer_scale=1e-6, drop_path=0.0):
        super().__init__()
        self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.norm = create("norm", norm, dim=dim)
        self.mlp = create("mlp", mlp, dim=dim)
        self.layer_scale = optional_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.layer_scale(self.mlp(self.norm(self.mixer(x)))))


@register("block", module=MetaNeXtBlock)
class MetaNeXtBlockConfig(BlockConfig):
    type: Literal["metanext"] = "metanext"
    examples = (
        {'mixer': {'type': 'inception'}},
        {'mixer': {'type': 'dwconv'}, 'norm': 'layernorm', 'layer_scale': None},
    )
    mixer: Mixer
    mlp: ChannelMixer = Field(default_factory=lambda: MlpConfig(ratio=4.0, act="gelu"))
    norm: Norm = Field(default_factory=BatchNormConfig)
    layer_scale: float | None = Field(1e-6, description="layer scale init value; null: off")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = self.mixer.params(shape, dim) + self.norm.params(shape, dim) + self.mlp.params(shape, dim)
        return n + (dim if self.layer_scale is not None else 0)

    def flops(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        return self.mixer.flops(shape, dim) + self.norm.flops(shape, dim) + self.mlp.flops(shape, dim)
