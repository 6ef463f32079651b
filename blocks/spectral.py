"""Spectral token mixing: GFNet's global filter (rfft2 -> learnable complex filter -> irfft2), and GFNet's
one-residual block.

FFT cost convention (GFNet's authors' own fvcore handle, used for their published FLOPs): an rfft2 or irfft2
over an (..., H', W', C) input costs prod(input shape) * ceil(log2(H' * W')), where H' x W' are the transformed
dims of the op's *input*: the real H x W map for rfft2, the H x (W//2+1) half spectrum for irfft2. The
element-wise filter product is not counted, as fvcore counts no element-wise op.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from blocks.base import BlockConfig, BlockModule, Shape, count, create, flop_handle, register
from blocks.layers import DropPath, optional_scale
from blocks.mlp import MlpConfig
from blocks.norm import LayerNormConfig

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import ChannelMixer, Mixer, Norm


def fft_cost(numel: int, transformed: int) -> int:
    """Multiply-accumulates of a 2D FFT over ``transformed`` points, applied to ``numel`` inputs."""
    return numel * math.ceil(math.log2(transformed)) if transformed > 1 else 0


def traced_int_list(value):
    """The constant ints of a traced list argument (``dim=(1, 2)``), or None."""
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        items = [item.toIValue() for item in node.inputs()]
        return None if None in items else items
    return value.toIValue()


@flop_handle("aten::fft_rfft2")
@flop_handle("aten::fft_irfft2")
def fft2_flop(inputs, outputs) -> int:
    """fvcore handle for rfft2 and irfft2 (inputs: tensor, s, dim, norm), by the convention above."""
    shape = inputs[0].type().sizes()
    dims = traced_int_list(inputs[2]) if len(inputs) > 2 else None
    dims = [d % len(shape) for d in (dims or (-2, -1))]
    return fft_cost(count(*shape), count(*(shape[d] for d in dims)))



def global_filter_cost(shape: Shape) -> int:
    """rfft2 of the C x H x W map plus irfft2 of its C x H x (W//2+1) spectrum, by the convention above."""
    c, h, w = shape
    half = w // 2 + 1
    return fft_cost(c * h * w, h * w) + fft_cost(c * h * half, h * half)


class GlobalFilter(BlockModule):
    """GFNet's global filter layer: a learnable complex filter per frequency and channel multiplies the 2D
    spectrum of the map, i.e. a depthwise circular convolution as large as the map. SpectFormer's spectral
    gating layers are this mixer too (a stage pattern puts them before attention blocks). The filter is
    sized for the map it is built for (H x W//2+1 frequencies), tying the network to its input resolution.
    The FFTs run in float32 (half-precision FFTs need power-of-two sizes)."""

    def __init__(self, dim, size):
        super().__init__()
        h, w = size
        # Real and imaginary parts in a trailing dim of 2: a real parameter, as optimizers and exports expect.
        self.filter = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)

    def forward(self, x):
        _, h, w, _ = x.shape
        spectrum = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
        # contiguous: model.to(memory_format=torch.channels_last), as CUDA training does, re-lays this 4-D
        # parameter too, and view_as_complex needs the (real, imaginary) pairs adjacent
        spectrum = spectrum * torch.view_as_complex(self.filter.contiguous())
        return torch.fft.irfft2(spectrum, s=(h, w), dim=(1, 2), norm="ortho").to(x.dtype)


@register("mixer", module=GlobalFilter)
class GlobalFilterConfig(BlockConfig):
    type: Literal["global_filter"] = "global_filter"

    def check(self, shape: Shape, out: int) -> None:
        """Any map size runs; the filter's (H, W//2+1) frequencies are those of the map at the genome's
        input resolution, so the built network runs at that resolution only."""

    def params(self, shape: Shape, out: int) -> int:
        c, h, w = shape
        return 2 * h * (w // 2 + 1) * c

    def flops(self, shape: Shape, out: int) -> int:
        return global_filter_cost(shape)

    def workspace(self, shape: Shape, out: int) -> int:
        c, h, w = shape
        return 2 * h * (w // 2 + 1) * c  # the complex spectrum


class GFNetBlock(BlockModule):
    """GFNet's block: norm -> token mixer -> norm -> channel MLP under ONE residual, x + mlp(norm(mix(norm(x)))),
    unlike the MetaFormer block's two. Layer scale as in the hierarchical GFNet-H models."""

    def __init__(self, dim, size, mixer, mlp, norm, layer_scale=None, drop_path=0.0):
        super().__init__()
        self.norm1 = create("norm", norm, dim=dim)
        self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.norm2 = create("norm", norm, dim=dim)
        self.mlp = create("mlp", mlp, dim=dim)
        self.layer_scale = optional_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        y = self.mlp(self.norm2(self.mixer(self.norm1(x))))
        return x + self.drop_path(self.layer_scale(y))


@register("block", module=GFNetBlock)
class GFNetBlockConfig(BlockConfig):
    type: Literal["gfnet"] = "gfnet"
    examples = (
        {},
        {'mixer': {'type': 'dwconv', 'kernel': 3}, 'mlp': {'type': 'mlp', 'ratio': 2}, 'layer_scale': 1e-5},
    )
    mixer: Mixer = Field(default_factory=GlobalFilterConfig)
    mlp: ChannelMixer = Field(default_factory=MlpConfig)
    norm: Norm = Field(default_factory=LayerNormConfig)
    layer_scale: float | None = Field(None, description="layer scale init value; null: off")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = 2 * self.norm.params(shape, dim) + self.mixer.params(shape, dim) + self.mlp.params(shape, dim)
        return n + (dim if self.layer_scale is not None else 0)

    def flops(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        return 2 * self.norm.flops(shape, dim) + self.mixer.flops(shape, dim) + self.mlp.flops(shape, dim)
