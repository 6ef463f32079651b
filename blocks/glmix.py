"""GLMix (Zhu et al., "Revisiting the Integration of Convolution and Attention for Vision Backbone", NeurIPS
2024): convolutions on the grid for local detail, multi-head attention on a small set of semantic slots for
global context, joined by a differentiable soft clustering (tokens -> slots) and dispatching (slots -> tokens).

- ``glmix`` (mixer): slots start as the adaptive average pool of the map to sqrt(slots) x sqrt(slots), or as
  learned vectors; a scaled cosine similarity between slots and tokens gives one logit matrix, softmaxed over
  tokens to cluster and over slots to dispatch. Attention runs on the slots only, so its cost does not grow with
  the map and the slot count is the same at any resolution. A 1x1 -> depthwise -> 1x1 conv branch adds the
  local detail.
- ``glnet`` (block): GLNet's block, a depthwise-conv positional encoding (CPE) added to the input, then
  norm -> token mixer -> residual and norm -> channel mixer -> residual. GLNet uses it with the GLMix mixer and,
  in its later stages, with plain multi-head attention.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, ValidationInfo, field_validator
from torch import nn

from blocks.attention import Attention, AttentionConfig, HeadedAttentionConfig
from blocks.base import BlockConfig, BlockModule, Shape, create, register
from blocks.layers import DropPath, nchw, nhwc, optional_scale
from blocks.mlp import ConvFfnConfig, depthwise_conv
from blocks.norm import LayerNormConfig
from blocks.validators import OddInt

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import ChannelMixer, Mixer, Norm


def slot_token_logits(slots, tokens, scale):
    """(B, S, N) similarity of S slots to N tokens: cosine similarity times a learned ``scale`` (a temperature),
    so neither the slots' nor the tokens' magnitude decides the assignment."""
    return F.normalize(slots, dim=-1) @ (scale * F.normalize(tokens, dim=-1)).transpose(1, 2)


class GLMix(BlockModule):
    """Soft clustering of the tokens into ``slots`` slots, multi-head attention among the slots, soft
    dispatching back to the tokens, plus a local conv branch (1x1 -> depthwise ``local_kernel`` -> 1x1).

    Clustering softmaxes the slot-token logits over tokens (each slot is a weighted mean of tokens);
    dispatching softmaxes the same logits over slots (each token is a weighted mean of slots). The 1x1 convs
    are channels-last linear layers (``local_in``, ``local_out``)."""

    def __init__(self, dim, slots=64, slot_init="pool", heads=None, head_dim=None, qkv_bias=True,
                 proj_bias=True, local_kernel=5):
        super().__init__()
        self.pool = math.isqrt(slots)
        self.slot_scale = nn.Parameter(torch.tensor(dim**-0.5))  # learned temperature, GLNet's initial value
        self.init_slots = None
        if slot_init == "param":
            self.init_slots = nn.Parameter(torch.empty(1, slots, dim))
            nn.init.normal_(self.init_slots, std=0.02)
        self.attn = Attention(dim, heads, head_dim, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.local_in = self.local_dw = self.local_out = None
        if local_kernel:
            self.local_in = nn.Linear(dim, dim)
            self.local_dw = depthwise_conv(dim, local_kernel)
            self.local_out = nn.Linear(dim, dim)

    def forward(self, x, pool_from=None):
        """``pool_from``: the map the initial slots are pooled from, when not ``x`` (GLNet's block passes its
        input, before the positional encoding and the norm)."""
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        if self.init_slots is None:  # pooling to a fixed grid: the same slot count at any map size
            source = x if pool_from is None else pool_from
            init = F.adaptive_avg_pool2d(nchw(source), self.pool).flatten(2).transpose(1, 2)
        else:
            init = self.init_slots.expand(b, -1, -1)
        logits = slot_token_logits(init, tokens, self.slot_scale)
        slots = logits.softmax(-1) @ tokens
        slots = self.attn(slots[:, None]).squeeze(1)  # the slots as a 1 x S map
        y = (logits.transpose(1, 2).softmax(-1) @ slots).reshape(b, h, w, c)
        if self.local_dw is not None:
            y = y + self.local_out(nhwc(self.local_dw(nchw(self.local_in(x)))))
        return y


@register("mixer", module=GLMix)
class GLMixConfig(HeadedAttentionConfig):
    """GLNet-4G: ``slots: 64`` pooled from an 8x8 grid, ``head_dim: 32``, ``local_kernel: 5``."""

    type: Literal["glmix"] = "glmix"
    examples = (
        {},
        {'slot_init': 'param', 'slots': 10, 'heads': 4, 'local_kernel': 3},
        {'slots': 16, 'local_kernel': None, 'qkv_bias': False, 'proj_bias': False, 'head_dim': 8},
    )
    slot_init: Literal["pool", "param"] = Field(
        "pool", description="pool: adaptive average pool of the map to a sqrt(slots) grid; param: learned slots")
    slots: PositiveInt = Field(64, description="semantic slots the attention runs on, at any resolution")
    local_kernel: OddInt | None = Field(5, description="depthwise kernel of the local conv branch; null: none")

    @field_validator("slots")
    @classmethod
    def _square_when_pooled(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("slot_init", "pool") == "pool" and math.isqrt(value) ** 2 != value:
            raise ValueError(f"{value} is not a square number, as slots pooled from a grid must be "
                             f"(or use slot_init: param)")
        return value

    def _slot_attention(self) -> AttentionConfig:
        return AttentionConfig(heads=self.heads, head_dim=self.head_dim, qkv_bias=self.qkv_bias,
                               proj_bias=self.proj_bias)

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = 1 + self._slot_attention().params((dim, 1, self.slots), dim)  # + the learned temperature
        n += self.slots * dim if self.slot_init == "param" else 0
        if self.local_kernel:
            n += 2 * (dim * dim + dim) + dim * (self.local_kernel**2 + 1)
        return n

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        tokens = h * w
        # logits, clustering and dispatching matmuls; attention among the slots
        n = 3 * self.slots * tokens * dim + self._slot_attention().flops((dim, 1, self.slots), dim)
        n += dim * tokens if self.slot_init == "pool" else 0  # fvcore counts one per pooled input element
        if self.local_kernel:
            n += tokens * dim * (2 * dim + self.local_kernel**2)
        return n

    def workspace(self, shape: Shape, out: int) -> int:
        """The slot-token logits and their two softmaxes, and the local branch's map."""
        dim, h, w = shape
        return 2 * self.slots * h * w + 2 * dim * h * w


class GLNetBlock(BlockModule):
    """x + CPE(x), then norm -> token mixer -> residual, norm -> channel mixer -> residual. The CPE is a
    depthwise conv (with bias) whose output is added to the block's input, before both residual branches.
    A GLMix mixer pools its initial slots from the block's input as it arrives, before CPE and norm, as GLNet
    does."""

    def __init__(self, dim, size, mixer, mlp, norm, pos_conv=3, layer_scale=None, drop_path=0.0):
        super().__init__()
        self.pos_conv = depthwise_conv(dim, pos_conv) if pos_conv else None
        self.norm1 = create("norm", norm, dim=dim)
        self.mixer = create("mixer", mixer, dim=dim, size=size)
        self.norm2 = create("norm", norm, dim=dim)
        self.mlp = create("mlp", mlp, dim=dim)
        self.layer_scale1 = optional_scale(dim, layer_scale)
        self.layer_scale2 = optional_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        arrived = x
        if self.pos_conv is not None:
            x = x + nhwc(self.pos_conv(nchw(x)))
        if isinstance(self.mixer, GLMix):
            mixed = self.mixer(self.norm1(x), pool_from=arrived)
        else:
            mixed = self.mixer(self.norm1(x))
        x = x + self.drop_path(self.layer_scale1(mixed))
        return x + self.drop_path(self.layer_scale2(self.mlp(self.norm2(x))))


@register("block", module=GLNetBlock)
class GLNetBlockConfig(BlockConfig):
    """GLNet-4G's blocks: the defaults (GLMix, LayerNorm, ConvFFN of ratio 3 with a residual 3x3 depthwise
    conv, 3x3 CPE); its attention blocks: ``mixer: {type: attention, head_dim: 32, qkv_bias: true,
    proj_bias: true}``."""

    type: Literal["glnet"] = "glnet"
    examples = (
        {},
        {'mixer': {'type': 'attention', 'heads': 4, 'qkv_bias': True}, 'pos_conv': None, 'layer_scale': 1e-4},
        {'mixer': {'type': 'glmix', 'slots': 4, 'heads': 2}, 'mlp': 'mlp', 'norm': 'batchnorm', 'pos_conv': 5},
    )
    mixer: Mixer = Field(default_factory=GLMixConfig)
    mlp: ChannelMixer = Field(default_factory=lambda: ConvFfnConfig(ratio=3, conv_residual=True))
    norm: Norm = Field(default_factory=LayerNormConfig)
    pos_conv: OddInt | None = Field(3, description="kernel of the depthwise conv positional encoding; null: none")
    layer_scale: float | None = Field(None, description="layer scale init value; null: off")

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        n = 2 * self.norm.params(shape, dim)
        n += self.mixer.params(shape, dim) + self.mlp.params(shape, dim)
        n += dim * (self.pos_conv**2 + 1) if self.pos_conv else 0
        return n + (2 * dim if self.layer_scale is not None else 0)

    def flops(self, shape: Shape, out: int) -> int:
        dim, h, w = shape
        n = 2 * self.norm.flops(shape, dim)
        n += self.mixer.flops(shape, dim) + self.mlp.flops(shape, dim)
        return n + (h * w * dim * self.pos_conv**2 if self.pos_conv else 0)
