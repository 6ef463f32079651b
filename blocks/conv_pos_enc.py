"""Convolutional position encoding (ConvPosEnc, CPE): x + depthwise_conv(x) before a block's sub-blocks, so
attention that has no position bias of its own (DaViT's window and channel attention) sees where tokens are.

``cpe_metaformer`` is the MetaFormer block with a CPE before each of its two sub-blocks, DaViT's spatial and
channel blocks alike: cpe -> norm -> token mixer -> residual, then cpe -> norm -> channel mixer -> residual.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from blocks.base import Shape, register
from blocks.layers import nchw, nhwc
from blocks.metaformer import MetaFormerBlock, MetaFormerBlockConfig
from blocks.validators import OddInt


class ConvPosEnc(nn.Module):
    """x + depthwise conv(x), with a bias, on channels-last maps; the conv is ``proj`` as in DaViT."""

    def __init__(self, dim, kernel=3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)

    def forward(self, x):
        return x + nhwc(self.proj(nchw(x)))


class ConvPosEncBlock(MetaFormerBlock):
    """A MetaFormer block with a ConvPosEnc before the token mixer's norm and another before the channel
    mixer's: the residual adds to the encoded map, as in DaViT."""

    def __init__(self, dim, size, mixer, mlp=None, norm=None, layer_scale=None, res_scale=None, drop_path=0.0,
                 pos_kernel=3):
        super().__init__(dim, size, mixer, mlp=mlp, norm=norm, layer_scale=layer_scale, res_scale=res_scale,
                         drop_path=drop_path)
        self.cpe1 = ConvPosEnc(dim, pos_kernel)
        self.cpe2 = ConvPosEnc(dim, pos_kernel) if mlp else None

    def forward(self, x):
        x = self.cpe1(x)
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path(self.mixer(self.norm1(x))))
        if self.mlp is not None:
            x = self.cpe2(x)
            x = self.res_scale2(x) + self.layer_scale2(self.drop_path(self.mlp(self.norm2(x))))
        return x


@register("block", module=ConvPosEncBlock)
class ConvPosEncBlockConfig(MetaFormerBlockConfig):
    """DaViT-T: ``pos_kernel: 3``, with window attention (``rel_pos: false``) and channel attention blocks
    alternating in a stage pattern."""

    type: Literal["cpe_metaformer"] = "cpe_metaformer"  # type: ignore[assignment]
    examples = (
        {'mixer': {'type': 'channel_attention', 'heads': 4}},
        {'mixer': {'type': 'window_attention', 'window': 4, 'rel_pos': False}, 'pos_kernel': 5, 'layer_scale': 1e-5},
        {'mixer': 'pooling', 'mlp': None, 'norm': 'batchnorm'},
    )
    pos_kernel: OddInt = Field(3, description="kernel of the depthwise conv of each position encoding")

    def _cpe_params(self, dim: int) -> int:
        return self._sub_blocks() * dim * (self.pos_kernel**2 + 1)

    def params(self, shape: Shape, out: int) -> int:
        return super().params(shape, out) + self._cpe_params(shape[0])

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        return super().flops(shape, out) + self._sub_blocks() * h * w * dim * self.pos_kernel**2
