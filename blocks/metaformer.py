"""The MetaFormer block (norm -> token mixer -> residual, norm -> channel mixer -> residual) and
composite blocks that chain sub-blocks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, ShapeError, create, register
from blocks.layers import DropPath, optional_scale
from blocks.mlp import MlpConfig
from blocks.norm import LayerNormConfig

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Block, ChannelMixer, Mixer, Norm


class MetaFormerBlock(BlockModule):
    """norm -> token mixer -> residual, then norm -> channel mixer -> residual; the default block type."""

    def __init__(self, dim, size, mixer, mlp=None, norm=None, layer_scale=None, res_scale=None, drop_path=0.0):
        super().__init__()
        self.norm1 = create("norm", norm, dim=dim)
        self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.drop_path = DropPath(drop_path)
        self.layer_scale1 = optional_scale(dim, layer_scale)
        self.res_scale1 = optional_scale(dim, res_scale)
        self.mlp = None
        if mlp:
            self.norm2 = create("norm", norm, dim=dim)
            self.mlp = create("mlp", mlp, dim=dim)
            self.layer_scale2 = optional_scale(dim, layer_scale)
            self.res_scale2 = optional_scale(dim, res_scale)

    def forward(self, x, token=None):
        """The map; with a (B, 1, 1, C) class token (a stage's ``class_token``), the map and the token."""
        if token is not None:
            return self.forward_with_token(x, token)
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path(self.mixer(self.norm1(x))))
        if self.mlp is not None:
            x = self.res_scale2(x) + self.layer_scale2(self.drop_path(self.mlp(self.norm2(x))))
        return x

    def forward_with_token(self, x, token):
        """Token and map as one (B, 1, 1 + H * W, C) sequence through the token-wise norms, MLP, scales and
        drop path (one draw per image for both), split for the mixer, which needs the map's grid."""
        b, h, w, c = x.shape
        seq = torch.cat([token, x.reshape(b, 1, h * w, c)], 2)
        normed = self.norm1(seq)
        mixed = self.mixer(normed[:, :, 1:].reshape(b, h, w, c), normed[:, :, :1])
        seq = self.res_scale1(seq) + self.layer_scale1(self.drop_path(mixed))
        if self.mlp is not None:
            seq = self.res_scale2(seq) + self.layer_scale2(self.drop_path(self.mlp(self.norm2(seq))))
        return seq[:, :, 1:].reshape(b, h, w, c), seq[:, :, :1]


@register("block", module=MetaFormerBlock)
class MetaFormerBlockConfig(BlockConfig):
    """The default block type: ``type: metaformer`` may be left out."""

    type: Literal["metaformer"] = "metaformer"
    examples = (
        {'mixer': {'type': 'attention', 'heads': 4}, 'layer_scale': 1e-05, 'res_scale': 1.0},
        {'mixer': 'pooling', 'norm': {'type': 'groupnorm', 'bias': False}, 'mlp': None},
    )
    mixer: Mixer
    mlp: ChannelMixer | None = Field(default_factory=MlpConfig, description="null: no channel-mixer sub-block")
    norm: Norm = Field(default_factory=LayerNormConfig)
    layer_scale: float | None = Field(None, description="layer scale init value; null: off")
    res_scale: float | None = Field(None, description="residual scale init value; null: off")

    def _sub_blocks(self) -> int:
        return 1 if self.mlp is None else 2

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        per_sub = self.norm.params(shape, dim) + dim * ((self.layer_scale is not None) + (self.res_scale is not None))
        n = self._sub_blocks() * per_sub + self.mixer.params(shape, dim)
        return n + (self.mlp.params(shape, dim) if self.mlp else 0)

    def flops(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = self._sub_blocks() * self.norm.flops(shape, dim) + self.mixer.flops(shape, dim)
        return n + (self.mlp.flops(shape, dim) if self.mlp else 0)

    def takes_class_token(self) -> bool:
        return all(child.takes_class_token() for _, child in self.children())

    def class_token_flops(self, shape: Shape, out: int) -> int:
        token = (shape[0], 1, 1)
        n = self._sub_blocks() * self.norm.flops(token, shape[0]) + self.mixer.class_token_flops(shape, shape[0])
        return n + (self.mlp.flops(token, shape[0]) if self.mlp else 0)


class SequenceBlock(BlockModule, nn.Sequential):
    """Sub-blocks applied in order, counted as one block of the stage (MaxViT: MBConv, block, grid). The first
    sub-block may resample; the rest run at its output."""

    def __init__(self, dim, size, blocks, in_chs=None, out_chs=None, drop_path=0.0):
        layers, chs, out = [], in_chs or dim, out_chs or dim
        for cfg in blocks:
            layer = create("block", cfg, dim=chs, in_chs=chs, out_chs=out, size=size, drop_path=drop_path)
            size, chs = layer.out_size(size), out
            layers.append(layer)
        super().__init__(*layers)

    def out_size(self, size):
        for layer in self:
            size = layer.out_size(size)
        return size


@register("block", module=SequenceBlock)
class SequenceBlockConfig(BlockConfig):
    type: Literal["sequence"] = "sequence"
    examples = (
        {'blocks': [{'type': 'convnext'}, {'mixer': {'type': 'attention', 'window': 4}}]},
    )
    blocks: list[Block] = Field(min_length=1)

    @property
    def resamples(self) -> bool:
        return self.blocks[0].resamples

    def built_blocks(self) -> int:
        return sum(block.built_blocks() for block in self.blocks)

    def _sites(self, shape: Shape, out: int) -> list[tuple[int, BlockConfig, Shape]]:
        sites = []
        for i, block in enumerate(self.blocks):
            sites.append((i, block, shape))
            shape = block.out_shape(shape, out)
        return sites

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return self.blocks[-1].out_shape(self._sites(shape, out)[-1][2], out)

    def check(self, shape: Shape, out: int) -> None:
        for i, block, site in self._sites(shape, out):
            try:
                block.check(site, out)
            except ShapeError as err:
                raise err.within(f"blocks[{i}]") from None

    def params(self, shape: Shape, out: int) -> int:
        return sum(block.params(site, out) for _, block, site in self._sites(shape, out))

    def flops(self, shape: Shape, out: int) -> int:
        return sum(block.flops(site, out) for _, block, site in self._sites(shape, out))

    def workspace(self, shape: Shape, out: int) -> int:
        return max(block.workspace(site, out) for _, block, site in self._sites(shape, out))

    def frozen_params(self, shape: Shape, out: int) -> int:
        return sum(block.frozen_params(site, out) for _, block, site in self._sites(shape, out))
